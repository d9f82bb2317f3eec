"""The one label definition: FER2013's class order, used by every component.

The index of a label is the class id in FER2013's ``emotion`` column and the
position of its score in every model output, so it must never be re-ordered.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(LABELS)

# Folder releases of FER2013 (e.g. Kaggle "facial-emotion-expressions") spell
# some class directories differently; accept those spellings when loading.
_ALIASES = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}


def label_index(name: str) -> int:
    """Class id for a label or folder name (case-insensitive, known aliases).

    Raises ``KeyError`` with the accepted names when ``name`` is unknown.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return LABELS.index(key)
    except ValueError:
        raise KeyError(f"unknown emotion label {name!r}; expected one of {', '.join(LABELS)}") from None
