"""pip, with one change: it never builds. Run as `python -I -c <this source> <pip's parent dir>
<pip arguments>` (the source is passed with `-c` so the build user needs no read access to the
packager's files).

`--only-binary=:all:` keeps sdists of the index and the wheelhouse out, but pip still *builds*
a direct reference (`name @ file:///...`, `https://...`, `git+...`), also one that a wheel's own
metadata declares — and building runs the package's build backend or `setup.py`. Here every
distribution that is not a wheel fails before its metadata is prepared, so no code of a
dependency runs while the packager resolves wheels. Kept free of imports from the packager: it runs
in another interpreter, as another user.
"""

import sys


def main() -> int:
    sys.path.insert(0, sys.argv[1])
    from pip._internal.cli.main import main as pip_main
    from pip._internal.distributions.sdist import SourceDistribution
    from pip._internal.exceptions import InstallationError

    def refuse(self: SourceDistribution, *_: object, **__: object) -> None:
        raise InstallationError(
            f"{self.req} is not a wheel; the packager never builds a distribution "
            "(no sdists, source trees or VCS checkouts)"
        )

    SourceDistribution.prepare_distribution_metadata = refuse  # type: ignore[method-assign]
    return pip_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
