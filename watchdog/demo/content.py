"""Learning content of the reference service: loaded from the shipped YAML, rendered per language.

Both data paths produce the same records (``Content``): the YAML path straight from the files, the DB path
from rows seeded from those files. Rendering is shared, so a response differs between the paths only in
where it came from (``X-Data-Source``) — which is exactly what a canary comparison needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

CONTENT_DIR = Path(__file__).with_name("content")
LANGUAGES = ("en", "zhTW", "zhCN")
Mode = Literal["pbl", "assessment", "discovery"]
MODES: tuple[Mode, ...] = ("pbl", "assessment", "discovery")
KSA_CATEGORIES = ("knowledge", "skills", "attitudes")
_KSA_SECTION_KEYS = {"knowledge": "knowledge_codes", "skills": "skill_codes", "attitudes": "attitude_codes"}
_SCENARIO_NAMESPACE = uuid.UUID("6f1f3c2e-0d1c-4b53-9d55-6a1f0e5e7a10")
_PBL_EMOJI_FALLBACK = "🤖"

Localized = Mapping[str, str]


class ContentError(Exception):
    """The shipped YAML content is malformed."""


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    """UUID, as in the v3 ``scenarios`` table; derived from ``source_id`` so both paths agree."""
    source_id: str
    """The YAML id (``yamlId`` in the app's responses)."""
    mode: Mode
    title: Localized
    description: Localized
    difficulty: str
    estimated_minutes: int
    target_domains: tuple[str, ...]
    task_count: int
    mode_data: Mapping[str, Any]
    """``pbl_data`` / ``assessment_data`` / ``discovery_data`` JSON of the v3 schema."""


@dataclass(frozen=True, slots=True)
class Competency:
    id: str
    description: Localized
    knowledge: tuple[str, ...]
    skills: tuple[str, ...]
    attitudes: tuple[str, ...]
    scenarios: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Domain:
    id: str
    name: Localized
    overview: Localized
    emoji: str
    competencies: tuple[Competency, ...]


@dataclass(frozen=True, slots=True)
class KsaCode:
    code: str
    summary: Localized


@dataclass(frozen=True, slots=True)
class KsaTheme:
    id: str
    explanation: Localized
    codes: tuple[KsaCode, ...]


@dataclass(frozen=True, slots=True)
class KsaSection:
    category: str
    """knowledge | skills | attitudes"""
    description: Localized
    themes: tuple[KsaTheme, ...]


@dataclass(frozen=True, slots=True)
class Content:
    scenarios: tuple[Scenario, ...]
    domains: tuple[Domain, ...]
    ksa: tuple[KsaSection, ...]
    by_mode: Mapping[Mode, tuple[Scenario, ...]] = field(init=False)

    def __post_init__(self) -> None:
        grouped = {mode: tuple(s for s in self.scenarios if s.mode == mode) for mode in MODES}
        object.__setattr__(self, "by_mode", grouped)


def scenario_uuid(mode: Mode, source_id: str) -> str:
    return str(uuid.uuid5(_SCENARIO_NAMESPACE, f"{mode}:{source_id}"))


def _read(path: Path) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContentError(f"cannot load {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ContentError(f"{path} must hold a mapping")
    return data


def _localized(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or "en" not in value:
        raise ContentError(f"{where}: expected a map of language → text with at least 'en'")
    return {str(k): str(v) for k, v in value.items()}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value or ())


def _scenarios(mode: Mode, data: Mapping[str, Any]) -> list[Scenario]:
    out: list[Scenario] = []
    for raw in data.get("scenarios", []):
        source_id = str(raw["id"])
        where = f"{mode} scenario {source_id}"
        config: Mapping[str, Any] = raw.get("config", {})
        if mode == "pbl":
            mode_data: dict[str, Any] = {
                "emoji": raw.get("emoji", _PBL_EMOJI_FALLBACK),
                "tasks": [
                    {"id": t["id"], "title": _localized(t["title"], where)} for t in raw.get("tasks", [])
                ],
            }
            task_count = len(raw.get("tasks", []))
            minutes = int(raw.get("estimated_duration", 0))
            domains = _strings(raw.get("target_domains"))
        elif mode == "assessment":
            mode_data = {
                "totalQuestions": int(config.get("total_questions", 12)),
                "passingScore": int(config.get("passing_score", 60)),
                "domains": list(_strings(config.get("domains"))),
            }
            task_count = 1
            minutes = int(config.get("time_limit_minutes", 15))
            domains = _strings(config.get("domains"))
        else:
            mode_data = dict(raw.get("discovery_data", {}))
            task_count = 0
            minutes = int(raw.get("estimated_duration", 0))
            domains = ()
        out.append(
            Scenario(
                id=scenario_uuid(mode, source_id),
                source_id=source_id,
                mode=mode,
                title=_localized(raw.get("title"), where),
                description=_localized(raw.get("description"), where),
                difficulty=str(raw.get("difficulty", "beginner")),
                estimated_minutes=minutes,
                target_domains=domains,
                task_count=task_count,
                mode_data=mode_data,
            )
        )
    return out


def load_content(content_dir: Path = CONTENT_DIR) -> Content:
    """Parse the shipped YAML files (the YAML data path's source of truth)."""
    scenarios = [
        *_scenarios("pbl", _read(content_dir / "pbl_scenarios.yaml")),
        *_scenarios("assessment", _read(content_dir / "assessment_scenarios.yaml")),
        *_scenarios("discovery", _read(content_dir / "discovery_scenarios.yaml")),
    ]
    domains_doc = _read(content_dir / "ai_lit_domains.yaml")
    domains = tuple(
        Domain(
            id=str(domain_id),
            name=_localized(raw.get("title"), f"domain {domain_id}"),
            overview=_localized(raw.get("overview"), f"domain {domain_id}"),
            emoji=str(raw.get("emoji", "")),
            competencies=tuple(
                Competency(
                    id=str(comp_id),
                    description=_localized(comp.get("description"), f"competency {comp_id}"),
                    knowledge=_strings(comp.get("knowledge")),
                    skills=_strings(comp.get("skills")),
                    attitudes=_strings(comp.get("attitudes")),
                    scenarios=_strings(comp.get("scenarios")),
                )
                for comp_id, comp in raw.get("competencies", {}).items()
            ),
        )
        for domain_id, raw in domains_doc.get("domains", {}).items()
    )
    ksa_doc = _read(content_dir / "ksa_codes.yaml")
    sections: list[KsaSection] = []
    for category in KSA_CATEGORIES:
        section = ksa_doc.get(_KSA_SECTION_KEYS[category])
        if not isinstance(section, Mapping):
            raise ContentError(f"ksa_codes.yaml has no {_KSA_SECTION_KEYS[category]}")
        sections.append(
            KsaSection(
                category=category,
                description=_localized(section.get("description"), category),
                themes=tuple(
                    KsaTheme(
                        id=str(theme_id),
                        explanation=_localized(theme.get("explanation"), f"theme {theme_id}"),
                        codes=tuple(
                            KsaCode(code=str(code), summary=_localized(item.get("summary"), f"code {code}"))
                            for code, item in theme.get("codes", {}).items()
                        ),
                    )
                    for theme_id, theme in section.get("themes", {}).items()
                ),
            )
        )
    return Content(scenarios=tuple(scenarios), domains=domains, ksa=tuple(sections))


# --- rendering (shared by both data paths) ------------------------------------------------------------


def normalize_language(lang: str | None) -> str:
    """The content language to serve: the requested one if we have it, else English (as the app does)."""
    return lang if lang in LANGUAGES else "en"


def pick(text: Localized, lang: str) -> str:
    return text.get(lang) or text.get("en") or ""


def _meta(lang: str, source: str) -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "version": "1.0.0",
        "language": lang,
        "source": source,
    }


def render_pbl(scenarios: Sequence[Scenario], lang: str, source: str) -> dict[str, Any]:
    items = [
        {
            "id": s.id,
            "yamlId": s.source_id,
            "sourceType": "pbl",
            "title": pick(s.title, lang),
            "description": pick(s.description, lang),
            "difficulty": s.difficulty,
            "estimatedDuration": s.estimated_minutes,
            "targetDomains": list(s.target_domains),
            "targetDomain": list(s.target_domains),
            "domains": list(s.target_domains),
            "taskCount": s.task_count,
            "isAvailable": True,
            "thumbnailEmoji": s.mode_data.get("emoji", _PBL_EMOJI_FALLBACK),
        }
        for s in scenarios
    ]
    return {
        "success": True,
        "data": {"scenarios": items, "total": len(items), "available": len(items)},
        "meta": _meta(lang, source),
    }


def render_assessment(scenarios: Sequence[Scenario], lang: str, source: str) -> dict[str, Any]:
    items = [
        {
            "id": s.id,
            "title": pick(s.title, lang),
            "description": pick(s.description, lang),
            "folderName": s.source_id,
            "config": {
                "totalQuestions": s.mode_data.get("totalQuestions", 12),
                "timeLimit": s.estimated_minutes,
                "passingScore": s.mode_data.get("passingScore", 60),
                "domains": list(s.mode_data.get("domains", [])),
            },
        }
        for s in scenarios
    ]
    return {
        "success": True,
        "data": {"scenarios": items, "totalCount": len(items)},
        "meta": _meta(lang, source),
    }


def render_discovery(scenarios: Sequence[Scenario], lang: str, source: str) -> dict[str, Any]:
    items = [
        {
            "id": s.id,
            "mode": "discovery",
            "sourceId": s.source_id,
            "difficulty": s.difficulty,
            "estimatedMinutes": s.estimated_minutes,
            "title": pick(s.title, lang),
            "description": pick(s.description, lang),
            "titleObj": dict(s.title),
            "descObj": dict(s.description),
            "primaryStatus": "new",
            "currentProgress": 0,
            "stats": {"completedCount": 0, "activeCount": 0, "totalAttempts": 0, "bestScore": 0},
            "discovery_data": dict(s.mode_data),
        }
        for s in scenarios
    ]
    return {
        "success": True,
        "data": {"scenarios": items, "total": len(items), "available": len(items)},
        "meta": _meta(lang, source),
    }


def render_ksa(sections: Sequence[KsaSection], lang: str) -> dict[str, Any]:
    return {
        _KSA_SECTION_KEYS[section.category]: {
            "description": pick(section.description, lang),
            "themes": {
                theme.id: {
                    "explanation": pick(theme.explanation, lang),
                    "codes": {code.code: {"summary": pick(code.summary, lang)} for code in theme.codes},
                }
                for theme in section.themes
            },
        }
        for section in sections
    }


def render_relations(domains: Sequence[Domain], sections: Sequence[KsaSection], lang: str) -> dict[str, Any]:
    ksa: dict[str, Any] = {}
    maps: dict[str, dict[str, Any]] = {"knowledge": {}, "skills": {}, "attitudes": {}}
    for section in sections:
        themes = []
        for theme in section.themes:
            name = theme.id.replace("_", " ")
            explanation = pick(theme.explanation, lang)
            items = [{"code": code.code, "summary": pick(code.summary, lang)} for code in theme.codes]
            themes.append({"id": theme.id, "name": name, "explanation": explanation, "items": items})
            for item in items:
                maps[section.category][item["code"]] = {
                    "summary": item["summary"],
                    "theme": name,
                    "explanation": explanation,
                }
        ksa[section.category] = {"themes": themes}
    return {
        "domains": [
            {
                "id": d.id,
                "name": pick(d.name, lang),
                "overview": pick(d.overview, lang),
                "emoji": d.emoji,
                "competencies": [
                    {
                        "id": c.id,
                        "description": pick(c.description, lang),
                        "knowledge": list(c.knowledge),
                        "skills": list(c.skills),
                        "attitudes": list(c.attitudes),
                        "scenarios": list(c.scenarios),
                    }
                    for c in d.competencies
                ],
            }
            for d in domains
        ],
        "ksa": ksa,
        "kMap": maps["knowledge"],
        "sMap": maps["skills"],
        "aMap": maps["attitudes"],
    }
