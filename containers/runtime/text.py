"""What a text model can read whole: the token limit, words its tokenizer knows, and the languages it was trained on.

A `TextGate` checks one text the way the model will see it (its own tokenizer) and raises `InputError` with a reason
a person can act on; the server answers that with a 400, which the node reports on-chain as the request's failure.
Nothing is ever cut: a text over the limit is refused, never truncated.

The checks, in order (each names the field, e.g. "text"):

1. `visible_text`: a text that is not valid Unicode (a lone surrogate, which JSON's `\\ud83d` escape can carry) is
   refused, and so is one of only whitespace, control characters (NUL, ESC, ...) or other invisible characters
   (zero-width spaces, byte-order marks): the tokenizer drops them all and the model would read nothing.
2. The token limit: the text's tokens, counting the markers the model adds (`[CLS]`, `[SEP]`), must be at most
   `max_tokens`.
3. Something to read: at least one token other than the markers and the unknown token. A text of emoji alone
   (which a WordPiece vocabulary such as MiniLM's maps to `[UNK]`), of symbols or fullwidth/math-styled letters the
   vocabulary lacks, or one word longer than the tokenizer's `max_input_chars_per_word` (100 for BERT's WordPiece:
   the whole word becomes `[UNK]`) is refused, the reason naming that cause. When every token is unknown and the
   letters are mostly of a script the languages are not written in, the script check (4) gives the reason instead.
   A text with such characters beside words ("meh 👎") is read: the model sees the tokens it knows. Punctuation is
   a token the model knows ("!!!", ":)" are read).
4. Language (when the gate has `languages`, e.g. `("en",)` for MiniLM): refused when the text's letters (NFKC-folded)
   are mostly of a script none of those languages is written in (Cyrillic, CJK, Arabic, ...: unambiguous even for
   two letters), or when py3langid (a naive Bayes identifier over byte n-grams, its model bundled in the wheel)
   gives another language a probability of at least `LANGUAGE_CONFIDENCE` on a text of at least
   `MIN_LANGUAGE_LETTERS` letters. That is the whole rule: it does not establish that a text is English. Its
   probabilities are tempered by the text's length, so a short or mixed text ("ok", "Kindergarten was fun") stays
   below the bar. Measured (`tests/integration/test_input_limits.py`, kept there as tests): no refusal among 2,025
   English texts (templated reviews with slang, loanwords, names, emoji); every non-English sentence in a non-Latin
   script refused, and longer German, French, Italian and Finnish sentences; but short sentences in Latin-script
   languages often pass ("Das Produkt ist schlecht", "Guten Morgen meine Freunde", "Dies ist gut", "Le produit est
   mauvais", "Je t'aime beaucoup", "Ciao a tutti amici miei", "Ti amo tanto", short Spanish, Dutch or Polish
   phrases: refusing them would mean refusing English too), and quoted foreign phrases may be refused ("Lorem ipsum
   dolor sit amet", "Ich bin ein Berliner", "C'est la vie"; with English around them, "Ich bin ein Berliner, said
   JFK", they pass).
"""

from __future__ import annotations

import copy
import functools
import re
import unicodedata
from typing import Any

from containers.runtime.model import InputError, visible_text

#: Probability another language must reach before a text is refused as not in the model's languages.
LANGUAGE_CONFIDENCE = 0.95
#: Letters a text must have before the identifier's verdict counts (fewer: too little to tell).
MIN_LANGUAGE_LETTERS = 8
#: Languages written in the Latin script (ISO 639-1): a gate for these refuses text mostly in another script.
LATIN_SCRIPT_LANGUAGES = frozenset(
    [
        "en",
        "fr",
        "de",
        "es",
        "it",
        "pt",
        "nl",
        "sv",
        "da",
        "no",
        "nb",
        "nn",
        "fi",
        "pl",
        "cs",
        "sk",
        "sl",
        "hr",
        "ro",
        "hu",
        "tr",
        "id",
        "ms",
        "vi",
        "ca",
        "eu",
        "gl",
        "et",
        "lv",
        "lt",
        "sq",
        "af",
        "sw",
    ]
)
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
    "fi": "Finnish",
    "sv": "Swedish",
    "pl": "Polish",
    "tr": "Turkish",
    "ru": "Russian",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "ar": "Arabic",
    "la": "Latin",
    "ca": "Catalan",
    "da": "Danish",
    "no": "Norwegian",
    "nb": "Norwegian Bokmål",
    "nn": "Norwegian Nynorsk",
    "cs": "Czech",
    "sk": "Slovak",
    "sl": "Slovenian",
    "hr": "Croatian",
    "ro": "Romanian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "ms": "Malay",
    "vi": "Vietnamese",
    "eu": "Basque",
    "gl": "Galician",
    "et": "Estonian",
    "lv": "Latvian",
    "lt": "Lithuanian",
    "sq": "Albanian",
    "af": "Afrikaans",
    "sw": "Swahili",
    "eo": "Esperanto",
    "cy": "Welsh",
    "ga": "Irish",
    "is": "Icelandic",
    "lb": "Luxembourgish",
    "oc": "Occitan",
    "tl": "Tagalog",
    "mt": "Maltese",
    "fy": "Frisian",
    "br": "Breton",
    "uk": "Ukrainian",
    "bg": "Bulgarian",
    "el": "Greek",
    "he": "Hebrew",
    "hi": "Hindi",
    "fa": "Persian",
}


def language_name(code: str) -> str:
    """`"de"` -> `"German"`; the code itself for a language without a name here."""
    return LANGUAGE_NAMES.get(code, code)


def language_label(code: str, probability: float) -> str:
    """`("la", 1.0)` -> `"Latin (la, p=1.00)"`; `"language code xx (p=…)"` for a code without a name here (never the
    code twice)."""
    name = LANGUAGE_NAMES.get(code)
    return f"{name} ({code}, p={probability:.2f})" if name else f"language code {code} (p={probability:.2f})"


@functools.cache
def language_identifier() -> Any:
    """py3langid's identifier with normalised probabilities, loaded once per process (~0.8 s, from the wheel)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """The most likely language of `text` (ISO 639 code) and its probability, 0 to 1."""
    lang, probability = language_identifier().classify(text)
    return str(lang), float(probability)


def letter_scripts(text: str) -> tuple[int, int, str]:
    """`(Latin letters, all letters, the most common other script)` of `text`'s letters, a script named by the first
    word of its letters' Unicode names ("CYRILLIC", "CJK", "HIRAGANA", ...; "" when every letter is Latin), after
    NFKC folding (so fullwidth and math-bold letters, U+FF28 and U+1D407 for "H", count as Latin)."""
    latin, letters = 0, 0
    others: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            letters += 1
            folded = unicodedata.normalize("NFKC", ch)[:1] or ch  # fullwidth, math-bold letters are Latin ones
            script = unicodedata.name(folded, "UNKNOWN").split(" ", 1)[0]
            if script == "LATIN":
                latin += 1
            else:
                others[script] = others.get(script, 0) + 1
    return latin, letters, max(others, key=lambda s: others[s]) if others else ""


#: A word as a BERT-style pre-tokenizer splits them: letters and digits (punctuation and `_` split words).
_WORD = re.compile(r"[^\W_]+")


def max_word_chars(tokenizer: Any) -> int | None:
    """The longest word (characters) a WordPiece tokenizer splits into pieces; a longer one becomes its unknown
    token. None for a tokenizer without that limit."""
    for owner in (getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None), tokenizer):
        owner = getattr(owner, "wordpiece_tokenizer", owner)
        limit = getattr(owner, "max_input_chars_per_word", None)
        if isinstance(limit, int):
            return limit
    return None


class TextGate:
    """Checks texts against one model's tokenizer (the module's four checks). `tokenizer`: a loaded transformers
    tokenizer (copied: the gate may run on another thread than the model's); `max_tokens`: the most tokens the model
    reads, its markers included; `languages`: ISO 639-1 codes the model reads, or None for no language check.
    Raises ValueError for a `max_tokens` below 1."""

    def __init__(self, tokenizer: Any, *, max_tokens: int, languages: tuple[str, ...] | None = None) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.tokenizer = copy.deepcopy(tokenizer)
        self.tokenizer.model_max_length = 10**9  # counted here, never cut: no "longer than" warnings either
        self.max_tokens = max_tokens
        self.languages = tuple(languages) if languages else None
        self.markers = int(self.tokenizer.num_special_tokens_to_add())
        self._unknown = self.tokenizer.unk_token_id
        self._special = set(self.tokenizer.all_special_ids)
        self._max_word_chars = max_word_chars(self.tokenizer)
        if self.languages:
            language_identifier()  # load now, not on the first request

    def token_ids(self, text: str) -> list[int]:
        """The ids the model would read for `text`, markers included, uncut."""
        return [int(i) for i in self.tokenizer(text, truncation=False)["input_ids"]]

    def check(self, text: str, field: str = "text") -> str:
        """`text` unchanged if the model can read it whole; raises `InputError` with the reason otherwise."""
        visible_text(text, field)
        ids = self.token_ids(text)
        if len(ids) > self.max_tokens:
            raise InputError(
                f"{field} is {len(ids)} tokens; this model reads at most {self.max_tokens} (counting its "
                f"{self.markers} markers) and cuts nothing: shorten the text, or split it and ask for each part"
            )
        # Before the identifier: it refuses only when every token is unknown, and then that is the cause (a
        # fullwidth or math-bold "Hello" is Latin letters the vocabulary lacks), unless the letters are of a
        # script the model does not read ("很好": both unknown to MiniLM), which is the better reason.
        if not any(i not in self._special and i != self._unknown for i in ids):
            if self.languages:
                self._check_script(text, field)
            raise InputError(f"{field} has nothing this model can read: {self._unknown_reason(text, ids)}")
        if self.languages:
            self._check_script(text, field)
            self._check_language(text, field)
        return text

    def _unknown_reason(self, text: str, ids: list[int]) -> str:
        unknown = sum(1 for i in ids if i == self._unknown)
        if not unknown:
            return f"its tokenizer drops all; send words{self._in_languages()}"
        longest = max((len(w) for w in _WORD.findall(text)), default=0)
        if self._max_word_chars is not None and longest > self._max_word_chars:
            return (  # WordPiece maps a word over its max_input_chars_per_word to the unknown token, whole
                f"its {unknown} token(s) are unknown to it: a word of {longest} characters, over its tokenizer's "
                f"{self._max_word_chars}-character word limit"
            )
        return (
            f"its {unknown} token(s) are unknown to it (emoji, symbols, fullwidth or styled letters); "
            f"send words{self._in_languages()}"
        )

    def _in_languages(self) -> str:
        return f" in {', '.join(language_name(c) for c in self.languages)}" if self.languages else ""

    def _reads(self) -> str:
        assert self.languages is not None
        return f"this model reads only {', '.join(f'{language_name(c)} ({c})' for c in self.languages)}"

    def _check_script(self, text: str, field: str) -> None:
        assert self.languages is not None
        latin, letters, script = letter_scripts(text)
        if set(self.languages) <= LATIN_SCRIPT_LANGUAGES and letters >= 2 and 2 * latin < letters:
            named = script if script == "CJK" else script.title()
            raise InputError(f"{field} is written mostly in {named} script, not Latin; {self._reads()}")

    def _check_language(self, text: str, field: str) -> None:
        assert self.languages is not None
        reads = self._reads()
        if sum(1 for ch in text if ch.isalpha()) < MIN_LANGUAGE_LETTERS:
            return
        lang, probability = detect_language(text)
        if lang not in self.languages and probability >= LANGUAGE_CONFIDENCE:
            raise InputError(f"{field} looks like {language_label(lang, probability)}; {reads}")

    def info(self) -> dict[str, Any]:
        """The limits for `/info`: `max_tokens`, `markers`, `over_limit`, `languages`, `refuses`."""
        return {
            "max_tokens": self.max_tokens,
            "markers": self.markers,
            "over_limit": "refused (400): nothing is cut",
            "languages": list(self.languages) if self.languages else "any (not checked)",
            "refuses": [
                "no visible characters (whitespace, control characters)",
                f"more than {self.max_tokens} tokens",
                "no token but the unknown one (emoji or symbols alone)",
                *(
                    [
                        "letters mostly in a script the languages are not written in",
                        f"another language at p >= {LANGUAGE_CONFIDENCE} over {MIN_LANGUAGE_LETTERS}+ letters",
                    ]
                    if self.languages
                    else []
                ),
            ],
        }
