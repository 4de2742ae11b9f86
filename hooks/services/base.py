"""A CDS service declaration: metadata (id, hook, prefetch) next to its handler."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..config import discovery_extension
from ..context import HookRequest

Handler = Callable[[HookRequest], dict]


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    handler: Handler
    usage_requirements: str | None = None
    required_context: tuple[str, ...] = ()  # context keys that must be present
    source_label: str = ""  # card source.label (the title when empty)
    hook_aliases: tuple[str, ...] = ()  # older names of the hook, still accepted in requests
    extra: dict = field(default_factory=dict)

    def accepts(self, hook: object) -> bool:
        """Whether a request for `hook` is one for this service's hook (or an older name of it)."""
        return hook == self.hook or hook in self.hook_aliases

    @property
    def label(self) -> str:
        return self.source_label or self.title

    def discovery(self, defaults: dict | None = None) -> dict:
        """The discovery entry; `defaults`: the deployment's configuration defaults
        (FLUORO_CDS_DEFAULTS), shown as the options' defaults."""
        entry = {"hook": self.hook, "title": self.title, "description": self.description,
                 "id": self.id, "extension": discovery_extension(defaults)}
        if self.prefetch:  # CDS Hooks 2.0: optional elements are omitted, never empty
            entry["prefetch"] = dict(self.prefetch)
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry
