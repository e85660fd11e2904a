"""The teacher-output cache, shared through the artifact store by workers on different hosts.

Each worker keeps the core's folder cache (distillery/teacher_cache.py) in a local working
folder and reads through to, and writes through to, the store's `teacher_outputs/` key: a worker
that never saw a teacher's outputs downloads what another worker computed instead of running the
teacher again. On a local store the working folder is the store itself and both are no-ops.
"""

from __future__ import annotations

import logging

from distillery.teacher_cache import TeacherCache, TeacherOutputs
from domain.storage import TEACHER_OUTPUTS_KEY, ArtifactStore

log = logging.getLogger(__name__)


class SharedTeacherCache(TeacherCache):
    def __init__(self, store: ArtifactStore) -> None:
        super().__init__(store.working_folder(TEACHER_OUTPUTS_KEY))
        self.store = store

    def entry_key(self, key: str) -> str:
        return f"{TEACHER_OUTPUTS_KEY}/{self.path(key).name}"

    def load(self, key: str, need_features: bool) -> TeacherOutputs | None:
        if not self.path(key).is_file():
            try:
                self.store.fetch_file(self.entry_key(key), self.path(key))
            except Exception:  # the cache is an optimisation: an unreachable store is a miss
                log.warning("could not read teacher outputs %s from the store", key, exc_info=True)
        return super().load(key, need_features)

    def save(self, key: str, outputs: TeacherOutputs) -> None:
        super().save(key, outputs)
        try:
            self.store.put_file(self.entry_key(key), self.path(key))
        except Exception:
            log.warning("could not write teacher outputs %s to the store", key, exc_info=True)
