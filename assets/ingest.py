"""Ingest assets: one day of traffic into `conversations` and `quarantine`."""

from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl

from assets.checks import SUITE, run_suite, suite_spec
from assets.metadata import counts_table, preview_table, schema_metadata
from assets.partitions import daily
from assets.resources import FlywheelSettings
from assets.steps import one_writer
from assets.versions import StepMemo, fingerprint
from pipeline import schema
from pipeline.digest import file_digest
from pipeline.folder_scan import scan_day
from pipeline.ingest import FILE_REASON_CODES, ingest_day
from pipeline.privacy_config import PrivacyConfig
from pipeline.source_chitchat import chitchat_path
from pipeline.sources import read_day
from quality.row_counts import row_count_history

GROUP = "ingest"
INGEST_VERSION = "ingest-4"


def _table_spec(key: str, contract: pl.Schema, description: str) -> dg.AssetSpec:
    # one read of the source writes both tables: they share the step's code version
    return dg.AssetSpec(
        key,
        group_name=GROUP,
        description=description,
        kinds={"polars", "parquet"},
        metadata=schema_metadata(contract),
        code_version=INGEST_VERSION,
    )


@dg.multi_asset(
    specs=[
        _table_spec(
            "conversations",
            schema.CONVERSATIONS,
            "One row per accepted message of the day's traffic: user ids replaced by salted hashes, "
            "text scrubbed of PII before it is written, per-row `pii_types`; counts per type in `pii_counts`.",
        ),
        _table_spec(
            "quarantine",
            schema.QUARANTINE,
            "Every rejected input record or file of the day, with its reason code, detail and location, "
            "and its payload with user ids pseudonymised and text scrubbed.",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "conservation",
            asset="conversations",
            blocking=True,
            description="Records read = accepted + quarantined, counted from what landed in the lake.",
        ),
        suite_spec("conversations", "conversations", blocking=True),
        suite_spec("quarantine", "quarantine", blocking=False),
    ],
    partitions_def=daily,
    # `--select conversations` alone must work: both tables come from one read of the source, so
    # both are always written (conservation needs both); only the selected ones are reported.
    can_subset=True,
)
@one_writer
def ingest(context: dg.AssetExecutionContext, settings: FlywheelSettings):
    day = date.fromisoformat(context.partition_key)
    source = settings.source_config()
    lake = settings.lake()
    hasher = settings.hasher()
    if hasher.warning:
        context.log.warning(hasher.warning)
        for key in context.selected_asset_keys:
            context.add_asset_metadata({"user_salt_warning": hasher.warning}, asset_key=key)
    memo = _memo(context, settings, source, day, hasher)
    outputs = {t: lake.partition_dir(t, day) / "part-0.parquet" for t in ("conversations", "quarantine")}
    if memo is not None and (events := memo.replay(outputs)) is not None:
        yield from events
        return
    events = list(_ingest(context, settings, source, lake, day, hasher))
    if memo is not None:
        memo.save(events)
    yield from events


def _memo(context, settings: FlywheelSettings, source, day: date, hasher) -> StepMemo | None:
    """The record of this day's last ingest: the source's files, the settings (the salt only as a keyed
    digest) and the selection are its inputs. None for a source without files to fingerprint."""
    found = _source_files(source, day)
    if found is None:
        return None
    files, refused = found
    selection = sorted(k.to_user_string() for k in context.selected_asset_keys) + sorted(
        f"{k.asset_key.to_user_string()}:{k.name}" for k in context.selected_asset_check_keys
    )
    code = context.assets_def.code_versions_by_key.get(dg.AssetKey("conversations")) or ""
    extra = [str(day), hasher("salt-fingerprint"), *selection, *refused]
    config = (source, settings.ingest_config(), PrivacyConfig())
    return StepMemo(settings.home, "ingest", day, fingerprint(code, config, files, extra))


def _source_files(source, day: date) -> tuple[list[Path], list[str]] | None:
    """The day's files to read, and its refused entries by name and reason (adding or removing one changes
    the quarantine); None for a source without files."""
    if source.kind == "chitchat":
        return [chitchat_path(source)], []
    if source.kind == "folder" and source.path and Path(source.path).is_dir():
        scan = scan_day(Path(source.path), day)
        return scan.files, [f"{label}:{code}" for label, code, _ in scan.refused]
    return None


def unread_files(quarantine) -> dict:
    """The files the source refused or could not read to their end, with their reason (file-level rows)."""
    files = quarantine.filter(quarantine["reason_code"].is_in(FILE_REASON_CODES)).select(
        "source_file", "reason_code", "detail"
    )
    return {"unread_files": files.height, "unread_file_list": preview_table(files, max_rows=50)}


def _preview(conv):
    """The first accepted rows (their text scrubbed at ingest: metadata never holds raw PII)."""
    return preview_table(conv.head(5).select("conversation_id", "turn_index", "role", "text", "ts", "character_id"))


def _ingest(context, settings: FlywheelSettings, source, lake, day: date, hasher):
    result = ingest_day(read_day(source, day), day, settings.ingest_config(), hasher, PrivacyConfig())
    conv_path = lake.write("conversations", day, result.conversations)
    quar_path = lake.write("quarantine", day, result.quarantine)
    lake.write("ingest_stats", day, result.stats(source.kind))
    # the counts of what scrubbing replaced: shown by `scrubbed_conversations` and the quality report
    lake.write("pii_counts", day, result.pii_counts.with_columns(pl.lit(day).alias("day")))
    context.log.info(
        f"{day}: read {result.records_read} records, accepted {result.conversations.height}, "
        f"quarantined {result.quarantine.height}"
    )
    unread = result.quarantine.filter(result.quarantine["reason_code"].is_in(FILE_REASON_CODES))
    if unread.height:
        context.log.warning(
            f"{day}: {unread.height} files not read to their end: "
            + ", ".join(f"{f} ({c})" for f, c in unread.select("source_file", "reason_code").iter_rows())
        )

    selected = context.selected_asset_keys
    conv = result.conversations
    if dg.AssetKey("conversations") in selected:
        yield dg.MaterializeResult(
            asset_key="conversations",
            data_version=dg.DataVersion(file_digest(conv_path)),
            metadata={
                "dagster/row_count": conv.height,
                "records_read": result.records_read,
                "conversations": conv["conversation_id"].n_unique() if conv.height else 0,
                "users": conv["user_hash"].n_unique() if conv.height else 0,
                "roles": counts_table(dict(conv.group_by("role").len().iter_rows()) if conv.height else {}, key="role"),
                "source": source.kind,
                "path": dg.MetadataValue.path(str(lake.partition_dir("conversations", day))),
                "preview": _preview(conv),
                "rows_with_pii": result.scrub.rows_with_pii,
                "pii_by_type": counts_table(result.pii_by_type(), key="pii_type"),
                **unread_files(result.quarantine),
            },
        )
    reasons = result.reason_counts()
    if dg.AssetKey("quarantine") in selected:
        yield dg.MaterializeResult(
            asset_key="quarantine",
            data_version=dg.DataVersion(file_digest(quar_path)),
            metadata={
                "dagster/row_count": result.quarantine.height,
                "quarantine_rate": round(result.quarantine.height / max(result.records_read, 1), 5),
                "by_reason": counts_table(reasons, total=result.records_read),
                "path": dg.MetadataValue.path(str(lake.partition_dir("quarantine", day))),
                "preview": preview_table(result.quarantine.select("source_file", "line", "reason_code", "detail")),
                **unread_files(result.quarantine),
            },
        )
    checks = context.selected_asset_check_keys
    if dg.AssetCheckKey(dg.AssetKey("conversations"), "conservation") in checks:
        yield conservation_check(lake, day)
    for table, df in (("conversations", conv.drop("pii_types")), ("quarantine", result.quarantine)):
        if dg.AssetCheckKey(dg.AssetKey(table), SUITE) in checks:
            yield run_suite(table, table, df, row_count_history(lake, table, day), lake=lake, day=day)[1]


def conservation_check(lake, day: date) -> dg.AssetCheckResult:
    stats = lake.read("ingest_stats", day, schema.INGEST_STATS)
    read = int(stats["records_read"].sum())
    accepted = (
        lake.query("SELECT count(*) AS n FROM conversations WHERE day = ?", [day])["n"][0]
        if lake.exists("conversations", day)
        else 0
    )
    quarantined = (
        lake.query("SELECT count(*) AS n FROM quarantine WHERE day = ?", [day])["n"][0]
        if lake.exists("quarantine", day)
        else 0
    )
    return dg.AssetCheckResult(
        check_name="conservation",
        asset_key="conversations",
        passed=bool(read == accepted + quarantined),
        metadata={
            "records_read": read,
            "accepted": int(accepted),
            "quarantined": int(quarantined),
            "missing": int(read - accepted - quarantined),
        },
    )
