"""Every PNG this service draws carries the settings that made it, in one PNG text chunk: its
provenance, and the thread for refining it by voice. Imports no model library.

The chunk is a tEXt chunk keyed ``speech2image`` whose text is a JSON object: ``prompt``,
``negative_prompt``, ``seed``, ``steps``, ``guidance_scale``, ``width``, ``height``,
``scheduler``, ``model``, ``strength`` (an edit's, else null), and, when the prompt was spoken,
``transcript`` and ``language`` (docs/api.md#provenance).

Refining by voice (:func:`refined`): the words spoken about an image that carries settings are
added to its prompt, after a comma ("a red car" + "in the snow" → "a red car, in the snow"), and
its seed is kept unless one is given. Words that begin with "new picture" or "start over" start
again: the rest of them is the prompt of a new image, not an edit.
"""

import dataclasses
import json
import re
from typing import Optional

from ..errors import InvalidRequest
from ..limits import MAX_SEED

KEY = "speech2image"
SETTINGS = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "scheduler", "model",
            "strength")
START_OVER = re.compile(r"^\W*(?:new picture|start over)\b[\s,.;:!?-]*", re.IGNORECASE)
MAX_CHUNK_CHARS = 64 * 1024  # a client's image: its chunk is read only this far


def chunk(image, heard: Optional[dict] = None) -> str:
    """The text of an image's settings chunk (`image`: a GeneratedImage); `heard`: the transcript
    and language its prompt was spoken in."""
    return json.dumps({**{name: getattr(image, name) for name in SETTINGS}, **(heard or {})})


def settings_of(picture) -> Optional[dict]:
    """The settings a PIL image carries (its own or another server's), or None: what a client
    sends is only trusted as far as a prompt (a string) and a seed (an integer in range)."""
    text = getattr(picture, "text", None) or picture.info
    raw = text.get(KEY) if isinstance(text, dict) else None
    if not isinstance(raw, str) or len(raw) > MAX_CHUNK_CHARS:
        return None
    try:
        settings = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None
    if not isinstance(settings, dict) or not isinstance(settings.get("prompt"), str):
        return None
    seed = settings.get("seed")
    usable_seed = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    return {"prompt": settings["prompt"], "seed": seed if usable_seed else None}


def refined(previous: Optional[dict], spoken: str) -> tuple[str, bool]:
    """(the prompt to draw, whether it is an edit) for words spoken about an image whose settings
    are `previous` (None: an image without them, edited as the words say)."""
    spoken = spoken.strip()
    restart = START_OVER.match(spoken)
    if restart:
        return spoken[restart.end():].strip(), False
    words = spoken.rstrip(".!? ")
    if not previous or not previous["prompt"].strip():
        return words, True
    return f"{previous['prompt'].strip()}, {words}", True


def spoken_edit(words: str, source, options, max_chars: int):
    """(prompt, source, options) for words spoken about `source` (a pictures.Source): the refined
    prompt, the source (None when the speaker started over) and the options with the image's seed
    unless one was asked. InvalidRequest when the refined prompt is over `max_chars`."""
    previous = settings_of(source.image)
    prompt, edit = refined(previous, words)
    if len(prompt) > max_chars:
        raise InvalidRequest(f"the refined prompt is {len(prompt)} characters, over max_prompt_chars={max_chars}: "
                             "say \"new picture\" and what to draw, to start over")
    if not edit:
        return prompt, None, options
    if options.seed is None and previous and previous["seed"] is not None:
        options = dataclasses.replace(options, seed=previous["seed"])
    return prompt, source, options
