"""``python -m ale_pipeline.app``: the same as ``ale-app``."""

from .cli import main

raise SystemExit(main())
