"""Tasks of the paper's kinds: their instructions (English, Spanish), subtasks and success checks.

A Task names objects by their world names ("red block", "bowl") and keeps each one's kind and
colour, so it can say them in another language without looking at the world.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm2vla_ros.sim.world import BLOCK, BOWL, PLATE, SimWorld

PICK_UP = "pick_up"
PUT_IN = "put_in"
PUT_ON = "put_on"
PICK_PLACE_LIFT = "pick_place_lift"
STACK = "stack"
MULTI_STEP = "multi_step"
TASK_KINDS = (PICK_UP, PUT_IN, PUT_ON, PICK_PLACE_LIFT, STACK, MULTI_STEP)
TASK_KIND_HELP = {
    PICK_UP: "pick up the red block",
    PUT_IN: "put the red block in the bowl",
    PUT_ON: "put the red block on the plate",
    PICK_PLACE_LIFT: "put the red block on the plate, then lift the gripper",
    STACK: "stack the red block on the blue block",
    MULTI_STEP: "put the red block in the bowl, then put the blue block on the plate",
}
LANGUAGES = ("en", "es")

PICK_HEIGHT_M = 0.05  # "picked up": held with its bottom at least this high
LIFT_HEIGHT_M = 0.10  # "lift the gripper": empty, open fingertips at least this high
PLACE_MAX_FALL_M = 0.03  # "put": let go at most this far above the target (the expert: 5 mm); higher is a drop

# Subtask actions; each is one short imperative phrase.
MOVE_ABOVE = "move_above"
GRASP = "grasp"
LIFT = "lift"
PLACE = "place"
LIFT_GRIPPER = "lift_gripper"

_NOUNS = {
    "en": {BLOCK: "block", BOWL: "bowl", PLATE: "plate"},
    "es": {BLOCK: "bloque", BOWL: "cuenco", PLATE: "plato"},
}
# Masculine forms: every Spanish noun above is masculine.
_ES_COLOURS = {
    "red": "rojo",
    "green": "verde",
    "blue": "azul",
    "yellow": "amarillo",
    "orange": "naranja",
    "purple": "morado",
    "pink": "rosa",
    "cyan": "cian",
    "white": "blanco",
    "grey": "gris",
    "brown": "marrón",
}
_PREPOSITIONS = {
    "en": {BOWL: "in", PLATE: "on", BLOCK: "on"},
    "es": {BOWL: "en", PLATE: "sobre", BLOCK: "sobre"},
}
_PHRASES = {
    "en": {
        PICK_UP: "pick up the {a}",
        "put": "put the {a} {prep} the {t}",
        STACK: "stack the {a} on the {t}",
        "then": "{first}, then {second}",
        MOVE_ABOVE: "move above the {a}",
        GRASP: "grasp the {a}",
        LIFT: "lift the {a}",
        PLACE: "place the {a} {prep} the {t}",
        LIFT_GRIPPER: "lift the gripper",
    },
    "es": {
        PICK_UP: "recoge el {a}",
        "put": "pon el {a} {prep} el {t}",
        STACK: "apila el {a} sobre el {t}",
        "then": "{first}, luego {second}",
        MOVE_ABOVE: "muévete sobre el {a}",
        GRASP: "agarra el {a}",
        LIFT: "levanta el {a}",
        PLACE: "coloca el {a} {prep} el {t}",
        LIFT_GRIPPER: "levanta la pinza",
    },
}


def _check_lang(lang: str) -> dict:
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} is not supported; choose one of {LANGUAGES}.")
    return _PHRASES[lang]


def noun_phrase(kind: str, colour: str, lang: str = "en") -> str:
    """How an object is called: blocks by colour ("red block"), the single bowl and plate by kind."""
    _check_lang(lang)
    noun = _NOUNS[lang][kind]
    if kind != BLOCK:
        return noun
    if lang == "en":
        return f"{colour} {noun}"
    return f"{noun} {_ES_COLOURS[colour]}"


@dataclass(frozen=True)
class Referent:
    """An object a task talks about: its world name, kind and colour."""

    name: str
    kind: str
    colour: str

    def phrase(self, lang: str) -> str:
        return noun_phrase(self.kind, self.colour, lang)


@dataclass(frozen=True)
class Placement:
    """Goal: block `obj` rests on (or in) object `target`."""

    obj: str
    target: str


@dataclass(frozen=True)
class Subtask:
    """One step of the canonical plan; `target` only for PLACE."""

    action: str
    obj: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class Task:
    kind: str
    referents: tuple[Referent, ...]
    pick: str | None = None  # PICK_UP: the block to hold up
    placements: tuple[Placement, ...] = ()
    lift_after: bool = False  # PICK_PLACE_LIFT: end with the empty gripper raised

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; choose one of {TASK_KINDS}.")
        known = {r.name for r in self.referents}
        named = [self.pick] if self.pick else []
        named += [n for p in self.placements for n in (p.obj, p.target)]
        missing = [n for n in named if n not in known]
        if missing:
            raise ValueError(f"task names {missing} without a referent.")
        if (self.pick is None) == (not self.placements):
            raise ValueError("a task is either one pick or one or more placements.")

    @property
    def targets(self) -> tuple[str, ...]:
        """Every object the instruction names, in order of mention."""
        if self.pick:
            return (self.pick,)
        return tuple(n for p in self.placements for n in (p.obj, p.target))

    def _ref(self, name: str) -> Referent:
        return next(r for r in self.referents if r.name == name)

    def _say(self, lang: str, key: str, obj: str | None = None, target: str | None = None) -> str:
        phrases = _check_lang(lang)
        words = {}
        if obj is not None:
            words["a"] = self._ref(obj).phrase(lang)
        if target is not None:
            words["t"] = self._ref(target).phrase(lang)
            words["prep"] = _PREPOSITIONS[lang][self._ref(target).kind]
        return phrases[key].format(**words)

    def instruction(self, lang: str = "en") -> str:
        phrases = _check_lang(lang)
        if self.pick:
            return self._say(lang, PICK_UP, self.pick)
        key = STACK if self.kind == STACK else "put"
        parts = [self._say(lang, key, p.obj, p.target) for p in self.placements]
        if self.lift_after:
            parts.append(phrases[LIFT_GRIPPER])
        text = parts[0]
        for part in parts[1:]:
            text = phrases["then"].format(first=text, second=part)
        return text

    @property
    def plan(self) -> tuple[Subtask, ...]:
        """The canonical subtasks, structured; the expert follows exactly these."""
        steps: list[Subtask] = []
        if self.pick:
            steps += [Subtask(MOVE_ABOVE, self.pick), Subtask(GRASP, self.pick), Subtask(LIFT, self.pick)]
        for p in self.placements:
            steps += [
                Subtask(MOVE_ABOVE, p.obj),
                Subtask(GRASP, p.obj),
                Subtask(LIFT, p.obj),
                Subtask(MOVE_ABOVE, p.target),
                Subtask(PLACE, p.obj, p.target),
            ]
        if self.lift_after:
            steps.append(Subtask(LIFT_GRIPPER))
        return tuple(steps)

    def subtask_text(self, subtask: Subtask, lang: str = "en") -> str:
        return self._say(lang, subtask.action, subtask.obj, subtask.target)

    def subtasks(self, lang: str = "en") -> list[str]:
        """The canonical subtasks as short imperative phrases."""
        return [self.subtask_text(s, lang) for s in self.plan]

    def check_success(self, world: SimWorld) -> bool:
        if self.pick:
            obj = world.object(self.pick)
            if not (obj.held and obj.z >= PICK_HEIGHT_M):
                return False
        if not all(placement_done(world, p) for p in self.placements):
            return False
        if self.lift_after:
            return world.gripper_open and world.held is None and world.gripper_z >= LIFT_HEIGHT_M
        return True


def placement_done(world: SimWorld, placement: Placement) -> bool:
    """The block was let go onto its target from just above it (a block dropped from higher
    would bounce or tip on a real table; and "put it in the bowl, then lift the gripper" would
    be done by opening high over the bowl, no descent and no lift); "in the bowl" means on its
    floor, not its rim."""
    obj, target = world.object(placement.obj), world.object(placement.target)
    if obj.held or obj.resting_on != target.name or obj.fell_m > PLACE_MAX_FALL_M:
        return False
    if target.kind == BOWL:
        return target.surface_at(obj.x, obj.y) < target.top
    return True
