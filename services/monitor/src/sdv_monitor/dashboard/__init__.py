"""The monitor's web dashboard, served at `/` beside the JSON API.

Server-rendered HTML (Jinja2, every value escaped) from the same queries as the API: a page is
whole without JavaScript, its data can be checked with a plain HTTP request, and a name a device
chose cannot become markup. Live updates are a small change feed (server-sent events) on which
htmx fetches a page's live part again. The browser libraries are vendored from npm into
`static/vendor` with their licences: nothing is loaded from another origin.
"""
