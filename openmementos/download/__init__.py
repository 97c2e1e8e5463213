"""`openmementos download`: reasoning traces in (OpenThoughts3 on the Hub, local files, the embedded
sample), clean `SourceTrace` shards out. See `stage.py` for how the parts fit together."""

from openmementos.download.stage import DEFAULT_DATASET, DownloadRequest, DownloadResult, run_download

__all__ = ["DEFAULT_DATASET", "DownloadRequest", "DownloadResult", "run_download"]
