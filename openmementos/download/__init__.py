"""`openmementos download`: reasoning traces in (OpenThoughts3 on the Hub, local files, the embedded
sample), clean `SourceTrace` shards out. See `stage.py` for how the parts fit together."""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_DATASET": "request",
    "DownloadRequest": "request",
    "DownloadResult": "stage",
    "run_download": "stage",
}
__all__ = ["DEFAULT_DATASET", "DownloadRequest", "DownloadResult", "run_download"]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.download.request import DEFAULT_DATASET, DownloadRequest
    from openmementos.download.stage import DownloadResult, run_download
