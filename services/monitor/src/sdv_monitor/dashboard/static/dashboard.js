// The dashboard's live behaviour, three small parts:
// 1. Change notices: the page names its feed in <body data-feed> (server-sent events, sent by
//    the monitor once its read model has the change). Each notice makes the page's live parts
//    (hx-trigger="sdv-changed from:body") fetch themselves again, at most every 400 ms, never a
//    reload. So does each (re)connect of the feed: what happened between the page's rendering
//    and its feed's start, or while it was away, has no notice.
// 2. The console tail: lines of an app (server-sent events `line`) appended as text, never markup.
// 3. A rollout's outcomes over time, drawn with uPlot from the JSON its live part carries.
(() => {
  "use strict";

  const state = document.getElementById("live-state");
  const say = (text, kind) => {
    if (state && state.textContent !== text) { state.textContent = text; state.dataset.state = kind; }
  };

  const feed = document.body.dataset.feed;
  if (feed) {
    let soon = null;
    const changed = () => document.body.dispatchEvent(new CustomEvent("sdv-changed"));
    const notice = () => {
      if (soon === null) soon = setTimeout(() => { soon = null; changed(); }, 400);
    };
    const source = new EventSource(feed);
    source.addEventListener("open", () => { say("Live", "live"); notice(); });
    source.addEventListener("error", () => say("Reconnecting…", "down"));
    source.addEventListener("changed", notice);
  }

  const log = document.getElementById("console-lines");
  if (log && log.dataset.src) {
    const status = document.getElementById("console-state");
    const keep = 1000;
    const clock = (ts) => ts > 0 ? new Date(ts * 1000).toISOString().slice(11, 23) : "";
    const source = new EventSource(log.dataset.src);
    source.addEventListener("open", () => { if (status) status.textContent = "Following the console."; });
    source.addEventListener("error", () => { if (status) status.textContent = "Console disconnected, reconnecting…"; });
    source.addEventListener("unavailable", () => { if (status) status.textContent = "The console cannot be read now."; });
    source.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      const row = document.createElement("div");
      row.className = "line " + (line.stream === "stderr" ? "stderr" : "stdout");
      const time = document.createElement("time");
      time.textContent = clock(line.ts);
      row.append(time, document.createTextNode(line.line));
      log.append(row);
      while (log.childElementCount > keep) log.firstElementChild.remove();
      const empty = document.getElementById("console-empty");
      if (empty) empty.remove();
      if (atEnd) log.scrollTop = log.scrollHeight;
    });
  }

  const drawChart = () => {
    const box = document.getElementById("progress-chart");
    if (!box || !box.dataset.series || typeof uPlot === "undefined") return;
    const series = JSON.parse(box.dataset.series);
    box.replaceChildren();
    const width = Math.max(280, box.clientWidth || 600);
    new uPlot({
      width, height: 180,
      scales: { x: { time: false, range: [0, series.until] }, y: { range: [0, series.devices] } },
      legend: { live: false },
      axes: [{ label: "seconds since created" }, { label: "devices" }],
      series: [
        { label: "s" },
        { label: "succeeded", stroke: "#1a7f37", width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
        { label: "failed", stroke: "#cf222e", width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
      ],
    }, [series.t, series.succeeded, series.failed], box);
  };
  drawChart();
  // A live part comes back as the server renders it: what the reader opened stays open.
  let opened = [];
  document.body.addEventListener("htmx:beforeSwap", () => {
    opened = [...document.querySelectorAll("details[id][open]")].map((d) => d.id);
  });
  document.body.addEventListener("htmx:afterSettle", () => {
    opened.forEach((id) => document.getElementById(id)?.setAttribute("open", ""));
    drawChart();
  });
})();
