"""The app keeps to this machine: the settings that stop Gradio (and the hub client under it) from calling home.

Set by the app itself before Gradio is imported, whatever the user's environment says: no usage analytics, no
version check, no hub telemetry, no server-side rendering process, no MCP server. The share tunnel is never
opened (``launch(share=False)``), the page's fonts are the system's (:data:`SYSTEM_FONTS`), and the server is
bound to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import os

#: Environment settings the app forces; see the module docstring.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # also turns off the version check against api.gradio.app
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "GRADIO_SHARE": "False",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_MCP_SERVER": "False",
}
#: The page's fonts: what the browser has, so no font file is ever requested from anywhere.
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
SYSTEM_MONO_FONTS = ("ui-monospace", "monospace")


def go_offline() -> None:
    """Apply :data:`OFFLINE_ENV` to this process."""
    os.environ.update(OFFLINE_ENV)
