"""The pipeline as a library: ``analyse(sources, settings) -> AnalysisResult``.

parse (file_parser) -> per-client features (ip_features) -> anomaly scores and reasons
(anomaly_detector) -> one immutable result that every report writer renders.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import math
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from numbers import Integral
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
import polars as pl

import anomaly_detector as detect
import file_parser
from anomaly_detector import Baseline
from log_analyser_core import ranking, verdict
from log_analyser_core.detectors import attribution, forest, forest_process
from log_analyser_core.detectors.forest_process import ForestProcess
from log_analyser_core.engines import engine as engines
from log_analyser_core.engines import partition
from log_analyser_core.engines import spark as spark_engine
from log_analyser_core.errors import InputError, SettingError, shown
from log_analyser_core.explain import explanations
from log_analyser_core.features import client as ip_features
from log_analyser_core.parsing import formats as log_formats
from log_analyser_core.parsing import reader as log_reader
from log_analyser_core.parsing import sources as log_input
from log_analyser_core.results import (
    AnalysisResult,
    Evidence,
    ExampleLine,
    FeatureInfo,
    Finding,
    Findings,
    Severity,
    Summary,
    flagged_findings,
)
from log_analyser_core.rules import sigma_engine
from log_analyser_core.rules.behaviour import BehaviourRule
from log_analyser_core.rules.crs import stage as crs_stage

if TYPE_CHECKING:
    from enrichment import EnrichmentSettings
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector

log = logging.getLogger(__name__)
PRELOAD_MAX_BYTES = forest_process.MAX_BYTES   # larger inputs: no preloading, no overlap of stages (memory first)
PRELOAD_MIN_BYTES = forest_process.MIN_BYTES   # smaller: parsed in milliseconds, sklearn imported only to fit
DEEP_PRELOAD_MIN_BYTES = 4 * 2**20   # ~20k combined lines
# The forest of a run over up to this many clients is fitted (or read from --model) and scored in a
# process of its own (detectors/forest_process.py); the matrices it is sent are then at most ~25 MB.
# A larger table's forest is made here, not copied into a second process.
REMOTE_MAX_CLIENTS = 100_000
TRAIN_MIN_CLIENTS = 20  # fewer clients than this cannot describe a site's normal traffic
FEATURE_INFO = tuple(FeatureInfo(f.name, f.unit, f.description) for f in ip_features.FEATURES)
NO_MODEL_HINT = ("no --model: scored against this log itself; for scores against trusted traffic, train once "
                 "with 'log_analyser train -f known_good.log --save model/' and add '--model model/'")


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; built once by the CLI (or a caller) and never changed."""

    format_name: str = "auto"
    log_format: str | None = None      # a custom Apache LogFormat / nginx log_format string
    tz: str = "UTC"                    # zone for timestamps that carry no offset, and for display
    json_fields: str | None = None     # JSON lines: FIELD=key,... over the default mapping
    real_ip_header: str | None = None  # x-forwarded-for, cf-connecting-ip or x-real-ip
    trusted_proxies: tuple = ()        # ipaddress networks whose real-IP header is believed
    since: datetime | None = None      # keep events at or after this (aware, UTC)
    until: datetime | None = None      # keep events before this
    max_decompressed: int | None = None  # bytes a compressed input may hold; None: the reader's default, 0: none
    threshold: float = 40.0            # flag clients scoring at least this (0-100)
    contamination: float | None = None  # or: flag this fraction of clients, highest scores first
    n_estimators: int = 200
    random_state: int = 0
    max_unparsed_ratio: float = 0.5    # more unparsed lines than this is an input error
    reasons: int = 3                   # reasons listed per client
    rule_paths: tuple[str, ...] = ()   # extra behaviour rule files/folders, beside the shipped ones
    allowlist: verdict.Allowlist | None = None   # --allow FILE
    enrichment: EnrichmentSettings | None = None   # --enrich: reputation and geography
    explain: explanations.ExplainSettings = explanations.ExplainSettings()  # the LLM stage (--explain)
    rules_dirs: tuple[str, ...] = ()   # Sigma rule folders added to the built-in pack
    builtin_rules: bool = True         # run the built-in Sigma pack (sigma/)
    detectors: tuple[str, ...] | None = None  # anomaly detectors to run; None: every installed one
    model: str | None = None           # a model directory from `log_analyser train`: score against it
    fusion: str = detect.DEFAULT_FUSION  # how detector scores combine: min, mean or max
    engine: str = "polars"             # "polars" (local) or "spark" (parse and aggregate on Spark)
    spark: spark_engine.SparkOptions = spark_engine.SparkOptions()
    crs: str | None = None             # a CRS folder (--crs); None: the one `rules update --crs` installed
    crs_auto: bool = True              # use the installed CRS when --crs is not given (--no-crs: False)
    paranoia: int = 1                  # CRS paranoia level, 1-4
    crs_settings: tuple[tuple[str, str], ...] = ()   # CRS tx settings (--crs-set NAME=VALUE)

    def __post_init__(self) -> None:
        """Refuse a value no run can use: raises SettingError (a ConfigError) naming the setting."""
        _check_ranges(self)
        _check_choices(self)
        _check_input(self)


ENGINES = tuple(engines.ENGINES)
REAL_IP_HEADERS = ("x-forwarded-for", "cf-connecting-ip", "x-real-ip")


def _check_ranges(s: Settings) -> None:
    if not 0.0 <= s.threshold <= 100.0:   # also refuses NaN
        raise SettingError("{} must be between 0 and 100, not " + shown(s.threshold), "threshold")
    if s.contamination is not None and not 0.0 < s.contamination <= 0.5:
        raise SettingError("{} must be in (0, 0.5], not " + shown(s.contamination), "contamination")
    if not 0.0 <= s.max_unparsed_ratio <= 1.0:
        raise SettingError("{} must be between 0 and 1, not " + shown(s.max_unparsed_ratio), "max_unparsed_ratio")
    for name, least in (("n_estimators", 1), ("reasons", 0), ("random_state", 0)):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, Integral) or value < least:   # numpy ints too
            raise SettingError(f"{{}} must be a whole number of at least {least}, not {shown(value)}", name)
    if s.paranoia not in (1, 2, 3, 4):
        raise SettingError(f"{{}} must be a CRS paranoia level, 1-4, not {shown(s.paranoia)}", "paranoia")


def _check_choices(s: Settings) -> None:
    for name, choices in (("fusion", detect.FUSIONS), ("engine", ENGINES)):
        value = getattr(s, name)
        if value not in choices:
            raise SettingError(f"{{}} must be one of {', '.join(choices)}, not {shown(value)}", name)
    if s.detectors is not None:
        unknown = [name for name in s.detectors if name not in detect.DETECTOR_NAMES]
        if unknown or not s.detectors:
            named = ", ".join(unknown) or "(none given)"
            raise SettingError("{}: unknown detector " + named.replace("{", "{{").replace("}", "}}"),
                               "detectors", hint=f"choose from {', '.join(detect.DETECTOR_NAMES)}")


def _check_input(s: Settings) -> None:
    if s.format_name != "auto" and s.log_format is None:
        log_formats.preset(s.format_name)   # raises ConfigError naming the known formats
    if s.tz != "UTC":
        file_parser.validate_timezone(s.tz)
    if s.real_ip_header is not None and s.real_ip_header not in REAL_IP_HEADERS:
        raise SettingError(f"{{}} must be one of {', '.join(REAL_IP_HEADERS)}, not {shown(s.real_ip_header)}",
                           "real_ip_header")
    if s.trusted_proxies and not s.real_ip_header:
        raise SettingError("{} needs {}", "trusted_proxies", "real_ip_header")
    if s.since is not None and s.until is not None and s.since >= s.until:
        raise SettingError(f"{{}} ({s.since:%Y-%m-%dT%H:%M:%SZ}) is not before {{}} ({s.until:%Y-%m-%dT%H:%M:%SZ})",
                           "since", "until")


def analyse(sources: Sequence[str], settings: Settings = Settings(),
            progress: file_parser.Progress | None = None, *,
            llm_cache: explanations.AnswerCache | None = None) -> AnalysisResult:
    """Run the whole pipeline over ``sources`` (paths, globs or '-' for stdin). ``llm_cache`` keeps
    the LLM stage's answers between runs."""
    engine = engines.named(settings.engine)
    notes = engine.notes(settings)   # before any work: it may refuse the settings
    rules = _sigma_rules(settings)   # before parsing, so that broken rules fail fast
    crs_rules, crs_notes = _crs_rules(settings)
    size = log_reader.input_bytes(sources)
    with _forest_process(size, settings, engine) as remote:   # until the findings are explained
        run = _parse_score_and_detect(engine, sources, size, settings, rules, crs_rules, progress, remote)
        with collector_paused():
            verdicts = run.judge(settings)
            findings: Sequence[Finding] = _ranked(run.scored, verdicts, settings)
    notes = [*run.scored.notes, *notes, *rules.notes(), *sigma_engine.unrecorded_fields(run.parsed.events, rules),
             *crs_notes]
    summary = replace(_summary(run.parsed, run.scored, findings, run.stages(rules, crs_rules), notes),
                      excluded=verdicts.excluded, tz=settings.tz)
    if settings.enrichment is not None:   # every client looked up and judged again: every Finding made
        enriched, summary = _enrich(list(findings), summary, settings, verdicts)
        findings = tuple(enriched)
    result = AnalysisResult(summary=summary, findings=findings, features=run.scored.table,
                            unparsed=run.parsed.unparsed, events=run.parsed.events, feature_info=FEATURE_INFO,
                            read_lines=log_input.with_raw)
    if settings.explain.enabled:
        result = explanations.explain(result, settings.explain, cache=llm_cache)
    return result


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a verdict and a Finding are built per client,
    or the reports are written from them: they hold no reference cycles, and with a million of
    them alive the collections it would run meanwhile walk them all again and again (seconds of
    a run). Cycles made meanwhile are collected once it runs again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Scored(NamedTuple):
    """The detectors' part of a run: the per-client table and its anomaly scores (0-100, higher =
    more anomalous), one per table row."""

    table: pl.DataFrame
    baseline: Baseline | None           # fitted or loaded detectors; None: too few clients to fit
    used: list[str]                     # the features the detectors read
    scores: np.ndarray                  # the detectors' scores fused (settings.fusion)
    by_detector: dict[str, np.ndarray]  # each detector's own
    notes: list[str]


class Run(NamedTuple):
    """What parsing, the detectors and the request-level stages found, before the verdicts."""

    parsed: file_parser.ParsedLog
    scored: Scored
    detected: Detected

    def judge(self, settings: Settings) -> verdict.Verdicts:
        """One verdict per client: the anomaly score joined with the request-level evidence."""
        return judge(self.detected, self.scored, settings)

    def stages(self, sigma_rules: sigma_engine.RuleSet, crs_rules: crs_stage.RuleSet | None) -> tuple[str, ...]:
        """The stages that ran: the detectors, then the request-level ones (Sigma and CRS with rules to run)."""
        requests = ("rules", "signatures", *(("sigma",) if sigma_rules.rules else ()),
                    *(("crs",) if crs_rules else ()))
        return (*self.scored.by_detector, *requests)


def _parse_score_and_detect(engine: engines.Engine, sources: Sequence[str], size: int, settings: Settings,
                            rules: sigma_engine.RuleSet, crs_rules: crs_stage.RuleSet | None,
                            progress: file_parser.Progress | None, remote: ForestProcess | None) -> Run:
    """Parse and aggregate ``sources`` (``size`` bytes) on ``engine``; then the detectors fit and
    score on a thread while the request-level stages run: both spend most of their time in Polars,
    scikit-learn or TensorFlow code, which releases the GIL (or in ``remote``, the forest's
    process). On larger inputs one runs after the other, so that their memory does not add to the
    rules' peak."""
    warming = _preload_detectors(size, settings, engine, remote)
    try:
        data = engine.aggregate(sources, settings, progress, _plan(settings, rules, crs_rules))
        assert data.detected is not None, "a plan was given"
        score = partial(_score, data, settings, ",".join(sources), warming, remote)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detectors") as pool:
            scoring = pool.submit(score) if size < PRELOAD_MAX_BYTES else None
            found = data.detected()
            detected = replace(found, evidence=_real_examples(found.evidence))
            scored = scoring.result() if scoring else score()
    finally:
        for thread in warming:   # also on an error: a thread left importing TensorFlow can crash the exit
            thread.join()
    return Run(data.parsed, scored, detected)


def _score(data: engines.Aggregated, settings: Settings, source: str, warming: list[threading.Thread],
           remote: ForestProcess | None) -> Scored:
    """The per-client table of ``data``, and the detectors fitted (or loaded) and scoring every
    client once their libraries are loaded. The detectors fit here, on the clients the engine gives
    (a sample past anomaly_detector.FIT_CLIENTS); the fitted model then scores where the engine
    keeps the table (on Spark, the executors), except the detectors whose scores are exact only
    over the whole table (not ROW_EXACT_DETECTORS), which score it here."""
    assert data.fitting is not None and data.scored is not None, "an engine that scores gives both"
    fit_table, logged = data.fitting(settings.random_state)
    for thread in warming:
        thread.join()
    baseline, used, model_notes = _baseline(fit_table, logged, settings, source, remote)
    del fit_table
    if baseline is None:
        table, _ = data.scored(lambda rows: {}, ())
        return Scored(table, None, used, np.zeros(table.height), {}, [*model_notes, detect.too_few_note(table.height)])
    row_exact = tuple(name for name in baseline.detectors if name in detect.ROW_EXACT_DETECTORS)
    table, own = data.scored(partial(detect.detector_scores, baseline, names=row_exact), row_exact)
    here = [name for name in baseline.detectors if name not in row_exact]
    own = {**own, **(detect.detector_scores(baseline, table, here) if here else {})}
    by_detector = {name: own[name] for name in baseline.detectors}
    scores = detect.fuse(by_detector, settings.fusion)
    return Scored(table, baseline, used, scores, by_detector, [*model_notes, detect.detectors_note(baseline,
                                                                                                  settings.fusion)])


def judge(detected: Detected | None, scored: Scored, settings: Settings) -> verdict.Verdicts:
    """One verdict per client of ``scored.table`` from its anomaly score and the request-level
    evidence (``detected``; None: no request-level stage ran, and the anomaly score is the
    verdict). Batch runs and live mode (log_analyser_core.live) both judge here."""
    table = scored.table
    if detected is None:
        return verdict.anomaly_only(table["client_ip"].to_list(), scored.scores.tolist(), settings.allowlist)
    verdicts = verdict.judge(table["client_ip"].to_list(), scored.scores.tolist(), detected.evidence,
                             detected.crawlers, settings.allowlist)
    return replace(verdicts, excluded={**detected.excluded, **verdicts.excluded})


def judged_findings(detected: Detected | None, scored: Scored, settings: Settings,
                    reference: Baseline | None) -> tuple[verdict.Verdicts, list[Finding]]:
    """The verdicts (see judge) and every client's Finding ranked by them; ``reference``: the
    baseline the robust z-scores are measured against (None: the table itself). Live mode's entry."""
    verdicts = judge(detected, scored, settings)
    return verdicts, list(_ranked(scored, verdicts, settings, reference))


def _ranked(scored: Scored, verdicts: verdict.Verdicts, settings: Settings,
            reference: Baseline | None = None) -> Findings:
    """Every client as a Finding, highest verdict score first: flagged at the threshold (or the
    contamination), explained by its deviations and contributions, with the verdict's evidence.
    ``reference``: see judged_findings (a batch run: the run's baseline, the --model one or the one
    fitted on the table)."""
    table = scored.table
    fused, allowed, judged_loud = verdicts.columns(table["client_ip"].to_list())
    flagged = _flags(fused, settings) & ~allowed
    if reference is None:   # the --model baseline, or the one fitted on this table: its median and spread
        reference = scored.baseline   # are the table's own, computed once rather than again for reasons
    findings = ranking.findings(table, scored.used, fused, scored.by_detector, flagged, settings.reasons, reference,
                                judged_loud)
    positions = list(findings.loud)
    loud = _explain(list(findings.loud.values()), table, scored.baseline)
    notable = verdicts.notable()
    loud = [_with_verdict(f, notable[f.ip]) if f.ip in notable else f for f in loud]
    findings.loud = dict(zip(positions, loud, strict=True))
    return findings


def _plan(settings: Settings, sigma_rules: sigma_engine.RuleSet | None,
          crs_rules: crs_stage.RuleSet | None) -> partition.Plan:
    """What each partition of the clients runs (engines/partition.py)."""
    return partition.Plan(tz=settings.tz, allowlist=settings.allowlist, rule_paths=settings.rule_paths,
                          sigma_rules=sigma_rules, crs_rules=crs_rules)


def detections(events: pl.DataFrame, settings: Settings, sigma_rules: sigma_engine.RuleSet | None = None,
               crs_rules: crs_stage.RuleSet | None = None) -> tuple[dict[str, list[Evidence]], dict[str, int]]:
    """Evidence by client ip from the behaviour rules, payload signatures, Sigma rules and CRS, and
    the requests the allowlist kept out of them ('excluded because' -> count)."""
    found = partition.detect(events, _plan(settings, sigma_rules, crs_rules))
    return _real_examples(found.evidence), found.excluded


def load_behaviours(settings: Settings) -> list[BehaviourRule]:
    """The shipped behaviour rules and those of ``settings.rule_paths``."""
    return partition.Plan(rule_paths=settings.rule_paths).behaviour_rules()


def sigma_rules(settings: Settings) -> sigma_engine.RuleSet:
    """The Sigma rules a run evaluates: the built-in pack (unless turned off) and ``settings.rules_dirs``."""
    return _sigma_rules(settings)


def crs_rules(settings: Settings) -> tuple[crs_stage.RuleSet | None, list[str]]:
    """The CRS rules a run over requests evaluates (None without a CRS) and the summary's note on them."""
    return _crs_rules(settings)


def _real_examples(evidence: dict[str, list[Evidence]]) -> dict[str, list[Evidence]]:
    """Evidence whose example lines are read back from the log files where they can be, and then
    no longer marked rebuilt (from standard input the rebuilt line and its mark stay). Lines that
    already are the logged text (Spark reads them on the executors) are left as they are."""
    text = log_input.read_back((x.source, x.line_number) for items in evidence.values()
                               for e in items for x in e.examples if x.rebuilt)

    def real(x: ExampleLine) -> ExampleLine:
        place = (x.source, x.line_number)
        return replace(x, raw=text[place], rebuilt=False) if place in text else x
    return {ip: [replace(e, examples=tuple(real(x) for x in e.examples)) for e in items]
            for ip, items in evidence.items()}


# What the request-level stages found (engines/partition.py); live mode builds its own.
Detected = partition.Detected


def _with_verdict(finding: Finding, judged: verdict.Verdict) -> Finding:
    if not verdict.adds_to(judged):
        return finding   # the common case among many clients: nothing to add (and no copy to make)
    reasons = tuple(f"{e.title} ({e.count:,}x)" for e in judged.evidence if e.attack_type is not None)[:2]
    if judged.allowlisted:
        reasons = (f"allowlisted: ip in {judged.allowlisted}",)
    return replace(finding, attack_types=judged.attack_types, evidence=judged.evidence, internal=judged.internal,
                   reasons=reasons + finding.reasons)


def _enrich(findings: list[Finding], summary: Summary, settings: Settings,
            verdicts: verdict.Verdicts) -> tuple[list[Finding], Summary]:
    """Reputation, geography and reputation evidence on every finding; the reputation evidence then
    joins the verdict as corroboration (it never flags a client on its own)."""
    import enrichment

    assert settings.enrichment is not None, "only called when --enrich is on"
    found = enrichment.enrich(findings, settings.enrichment)
    enriched = [replace(f, reputation=found.reputation.get(f.ip), geo=found.geo.get(f.ip)) for f in findings]
    enriched = _corroborate(enriched, found.evidence, verdicts, settings)
    rollup = enrichment.summarise(enriched, found, has_key=settings.enrichment.api_key is not None)
    severities = Counter(f.severity.label for f in enriched if f.flagged)
    return enriched, replace(summary, notes=summary.notes + found.notes, enrichment=rollup,
                             flagged=sum(f.flagged for f in enriched),
                             by_severity={s.label: severities.get(s.label, 0) for s in reversed(Severity)})


def _corroborate(findings: list[Finding], extra: dict[str, tuple[Evidence, ...]], verdicts: verdict.Verdicts,
                 settings: Settings) -> list[Finding]:
    """Judge again with later stages' evidence, then flag and rank again (scores 0-100)."""
    judged = {f.ip: verdicts.rejudge(f.ip, extra.get(f.ip, ())) for f in findings}
    scores = np.array([judged[f.ip].score for f in findings], dtype=np.float64)
    allowed = np.array([judged[f.ip].allowlisted is not None for f in findings], dtype=bool)
    flags = _flags(scores, settings) & ~allowed
    updated = [replace(f, score=judged[f.ip].score, severity=detect.severity_for(judged[f.ip].score),
                       flagged=bool(flag), attack_types=judged[f.ip].attack_types, evidence=judged[f.ip].evidence)
               for f, flag in zip(findings, flags, strict=True)]
    updated.sort(key=lambda f: (-f.score, f.ip))
    return [replace(f, rank=rank) for rank, f in enumerate(updated, start=1)]


def _sigma_rules(settings: Settings) -> sigma_engine.RuleSet:
    folders = ([sigma_engine.builtin_dir()] if settings.builtin_rules else []) + list(settings.rules_dirs)
    return sigma_engine.load(folders)


def _crs_rules(settings: Settings) -> tuple[crs_stage.RuleSet | None, list[str]]:
    """The CRS rules to run and the summary's note on them; without a CRS, None and a note that
    says so (the other stages run as ever)."""
    if not (settings.crs or settings.crs_auto):
        return None, []
    folder = crs_stage.find(settings.crs, settings.crs_auto)
    if folder is None:
        return None, [crs_stage.NO_CRS_NOTE]
    ruleset = crs_stage.load(folder, settings.paranoia, settings=settings.crs_settings)
    return ruleset, crs_stage.notes(ruleset)


@contextlib.contextmanager
def _forest_process(size: int, settings: Settings, engine: engines.Engine) -> Iterator[ForestProcess | None]:
    """A process importing scikit-learn for the run's forest while the log is parsed, ended when
    the run is (detectors/forest_process.py); on inputs where the import would be preloaded
    (``size`` bytes, see _preload_detectors), when the forest is fitted (or a format 1 --model's
    read) here, not on Spark, and scikit-learn is not imported already (a caller that ran before).
    None otherwise (a format 2 --model's forest is walked in NumPy), or when no process could be
    started."""
    wanted = PRELOAD_MIN_BYTES <= size < PRELOAD_MAX_BYTES and engine.keeps_events and not _sklearn_imported() \
        and not _model_reads_alone(settings)
    if not wanted:
        forest_process.discard()   # one the CLI started early: ended now, not left importing beside the run
    remote = forest_process.take() if wanted else None
    try:
        yield remote
    finally:
        if remote is not None:
            remote.close()


def _model_reads_alone(settings: Settings) -> bool:
    """Whether the run's --model scores in NumPy alone (no scikit-learn, no forest process)."""
    return settings.model is not None and forest.saved_as_trees(settings.model)


def _sklearn_imported() -> bool:
    return "sklearn.ensemble" in sys.modules


def _preload_detectors(size: int, settings: Settings, engine: engines.Engine,
                       remote: ForestProcess | None) -> list[threading.Thread]:
    """Import the detectors' libraries on threads while Polars parses (Polars releases the GIL):
    scikit-learn (about a second), unless ``remote`` imports it, and except on large inputs, where
    its ~90 MB would add to the peak of the feature stage; and Keras on TensorFlow (about 4 s and
    650 MB, held from training to the report anyway, so that importing early raises the peak by
    under 0.1 GB at 5M lines) when the autoencoder will likely run, i.e. on inputs large enough to
    hold the clients it needs. ``size``: the input's bytes on disk."""
    targets: list[Callable[[], object]] = []
    if PRELOAD_MIN_BYTES <= size < PRELOAD_MAX_BYTES and remote is None and not _model_reads_alone(settings):
        targets.append(lambda: importlib.import_module("sklearn.ensemble"))
    # a saved autoencoder scores with NumPy: TensorFlow is needed only to train one on the log itself
    if size >= DEEP_PRELOAD_MIN_BYTES and engine.keeps_events and settings.model is None and \
            "autoencoder" in (settings.detectors or detect.ANALYSE_DETECTORS):
        from log_analyser_core.detectors import autoencoder

        targets.append(autoencoder.preload)
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    return threads


def _baseline(table: pl.DataFrame, used: list[str], settings: Settings, source: str,
              remote: ForestProcess | None = None) -> tuple[Baseline | None, list[str], list[str]]:
    """(fitted or loaded detectors, the features they use, notes); None when too few clients to fit.
    The forest is fitted (or read) in ``remote`` when given and the table is small enough to send."""
    if remote is not None and table.height > REMOTE_MAX_CLIENTS:
        remote.close()
        remote = None
    if settings.model:
        from log_analyser_core.detectors import model_store

        model = model_store.load(settings.model, settings.detectors, remote)
        model_store.check_features(model, used, source)
        training = model.metadata["training"]
        note = (f"scored against the baseline model {settings.model} (trained on {training['clients']} clients, "
                f"{training.get('time_start') or '?'} to {training.get('time_end') or '?'})")
        return model.baseline, list(model.baseline.features), [note]
    if table.height < detect.MIN_CLIENTS:
        return None, used, []
    detectors = detect.resolve_detectors(settings.detectors or detect.ANALYSE_DETECTORS)
    return detect.fit_baseline(table, used, detectors, n_estimators=settings.n_estimators,
                               random_state=settings.random_state, remote=remote), used, []


def _explain(findings: list[Finding], table: pl.DataFrame, baseline: Baseline | None) -> list[Finding]:
    """Add each detector's feature contributions (and sentences) to the flagged findings."""
    if baseline is None:
        return findings
    flagged = [k for k, f in enumerate(findings) if f.flagged]
    rows = _rows_of(table, [findings[k].ip for k in flagged])
    chosen = table[rows]   # the flagged clients' rows: a matrix of a million clients is gigabytes
    explained = attribution.explain(baseline, detect.feature_matrix(chosen, baseline.features), range(len(rows)))
    findings = list(findings)
    for k, row, contributions in zip(flagged, chosen.iter_rows(named=True), explained, strict=True):
        text = attribution.sentences(contributions, row)
        findings[k] = replace(findings[k], contributions=contributions, explanation=tuple(text))
    return findings


def _rows_of(table: pl.DataFrame, ips: list[str]) -> list[int]:
    """The table rows of the clients ``ips`` (each in the table once), in that order."""
    if not ips:
        return []
    found = table.select(pl.col("client_ip").cast(pl.String), pl.int_range(pl.len()).alias("_row")) \
        .filter(pl.col("client_ip").is_in(ips))
    row_of = dict(zip(found["client_ip"].to_list(), found["_row"].to_list(), strict=True))
    return [row_of[ip] for ip in ips]


def _flags(scores: np.ndarray, settings: Settings) -> np.ndarray:
    if settings.contamination is None:
        return scores >= settings.threshold
    count = math.ceil(settings.contamination * len(scores))
    order = np.argsort(-scores, kind="stable")[:count]
    flags = np.zeros(len(scores), dtype=bool)
    flags[order] = True
    return flags & (scores > 0)


def _summary(parsed: file_parser.ParsedLog, scored: Scored, findings: Sequence[Finding], stages: tuple[str, ...],
             notes: list[str]) -> Summary:
    table, used = scored.table, scored.used
    flagged = flagged_findings(findings)
    severities = Counter(f.severity.label for f in flagged)
    return Summary(
        sources=tuple(parsed.stats.formats), formats=dict(parsed.stats.formats),
        total_lines=parsed.stats.total_lines, parsed_lines=parsed.stats.parsed_lines,
        unparsed_by_reason=dict(parsed.stats.unparsed_by_reason), clients=len(findings),
        flagged=len(flagged),
        by_severity={s.label: severities.get(s.label, 0) for s in reversed(Severity)},
        time_start=table["first_seen"].min() if table.height else None,  # type: ignore[arg-type]
        time_end=table["last_seen"].max() if table.height else None,     # type: ignore[arg-type]
        detectors=stages, features_used=tuple(used), notes=(*parsed.stats.notes, *notes),
        not_access=dict(parsed.stats.not_access), recovered=parsed.stats.recovered,
    )


def train(sources: Sequence[str], directory: str, settings: Settings = Settings()) -> dict:
    """Fit the detectors on trusted traffic and save them to ``directory`` (model_store); returns the
    training summary recorded with the model (``detectors``: those fitted), and ``skipped``: the
    detectors asked for but not fitted, too few clients (name -> the clients each needs). Raises
    InputError when there are too few clients for any."""
    from log_analyser_core.detectors import model_store

    data = engines.named(settings.engine).aggregate(sources, settings)   # the path analyse() takes
    parsed, table = data.parsed, data.features()
    if table.height < TRAIN_MIN_CLIENTS:
        raise InputError(f"{table.height} client(s) is too few to learn what normal traffic looks like",
                         hint=f"train on a period with at least {TRAIN_MIN_CLIENTS} clients")
    used = ip_features.logged_features(table)
    detectors = detect.resolve_detectors(settings.detectors)
    baseline = detect.fit_baseline(table, used, detectors, n_estimators=settings.n_estimators,
                                   random_state=settings.random_state)
    summary = {"sources": list(parsed.stats.formats), "formats": dict(parsed.stats.formats),
               "total_lines": parsed.stats.total_lines, "parsed_lines": parsed.stats.parsed_lines,
               "clients": table.height, "detectors": list(baseline.detectors), "seed": settings.random_state,
               "n_estimators": settings.n_estimators,
               "time_start": _iso(table["first_seen"].min()), "time_end": _iso(table["last_seen"].max())}
    if "autoencoder" in baseline.detectors:
        network = cast("AutoencoderDetector", baseline.detectors["autoencoder"])
        summary["autoencoder"] = {"epochs_run": network.epochs_run_, "threshold": network.threshold_}
    model_store.save(baseline, directory, summary)
    log.info("saved a %s model of %d clients to %s", "+".join(baseline.detectors), table.height, directory)
    # not recorded with the model: what was asked for and not fitted, for the command's message
    return {**summary, "skipped": {name: detect.MIN_CLIENTS_FOR[name] for name in baseline.skipped}}


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
