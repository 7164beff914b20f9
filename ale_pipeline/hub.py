"""Whether the Hugging Face hub can be reached, asked once and quickly before a download.

Without a network, ``huggingface_hub`` retries each request with back-off: about 25 s and a warning per try
before the first download gives up. A command that can do without the hub (the demo's fallback to a random
model, a checkpoint already in the local cache) asks here first and skips the hub when it is out of reach.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

#: Seconds a TCP connection to the hub may take before it counts as out of reach.
PROBE_SECONDS = 3.0
#: With one of these set, connections go through a proxy this probe does not speak: the hub is then assumed
#: reachable and ``huggingface_hub`` decides.
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_endpoint() -> str:
    """The hub's address: ``HF_ENDPOINT``, by default https://huggingface.co."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub's host (``HF_ENDPOINT``, by default https://huggingface.co) accepts a TCP connection
    within ``timeout`` seconds. False when ``HF_HUB_OFFLINE`` is set; True without a probe behind a proxy."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    endpoint = urlsplit(hub_endpoint())
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return True
    except OSError:  # no DNS, refused, unreachable or timed out
        return False
