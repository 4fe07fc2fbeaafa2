"""`python -m service`: run the service on the configured host and port."""

import sys

import uvicorn

from workbench.settings import Settings


def main() -> int:
    settings = Settings()
    try:
        settings.check_token()
        settings.check_bind()
    except ValueError as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "service.main:app", host=settings.host, port=settings.port, log_level=settings.log_level.lower()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
