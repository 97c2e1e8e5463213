"""The machinery every stage runs on, and nothing stage-specific.

- `atomic`: files that appear whole or not at all;
- `shardio`: parquet shards and quarantine files of a stage folder, written and read;
- `manifest`: what a stage folder holds (its stage, options, finished shards);
- `selection`: `--shard I/N`, the shards one run takes;
- `stage`: the resumable per-shard stage runner (`Stage`, `ShardTask`, `Quarantined`);
- `executors`: where shard tasks run (`local` process pool, `ray` cluster);
- `progress`: the progress bars and live status lines.
"""
