"""The language gate: questions the embedder cannot read get exact caching only."""

from __future__ import annotations

import pytest

from cache.semantic.language import LanguageGate, SemanticPath, coverage, english_gate
from cache.semantic.verifier import AllowAll
from tests.cache.conftest import CacheFactory, answer, chat
from tests.cache.fakes import CollapsingEmbedder

# "When will my order ship?" / "When will my order be refunded?" in each script that
# all-MiniLM-L6-v2 cannot read: two questions that need different answers.
NEAR_MISSES = {
    "zh": ("我的订单什么时候发货？", "我的订单什么时候退款？"),
    "ja": ("注文はいつ発送されますか？", "注文はいつ返金されますか？"),
    "ko": ("제 주문은 언제 배송되나요?", "제 주문은 언제 환불되나요?"),
    "th": ("คำสั่งซื้อของฉันจะจัดส่งเมื่อไร", "คำสั่งซื้อของฉันจะได้รับเงินคืนเมื่อไร"),
    "ar": ("متى سيتم شحن طلبي؟", "متى سيتم استرداد ثمن طلبي؟"),
    "he": ("מתי ההזמנה שלי תישלח?", "מתי אקבל החזר על ההזמנה שלי?"),
    "hi": ("मेरा ऑर्डर कब भेजा जाएगा?", "मेरे ऑर्डर का रिफंड कब मिलेगा?"),
    "ru": ("Когда будет отправлен мой заказ?", "Когда мне вернут деньги за заказ?"),
    "uk": ("Коли буде відправлено моє замовлення?", "Коли мені повернуть гроші за замовлення?"),
    "el": (
        "Πότε θα αποσταλεί η παραγγελία μου;",
        "Πότε θα επιστραφούν τα χρήματα της παραγγελίας μου;",
    ),
    "es": ("¿Cuándo se enviará mi pedido?", "¿Cuándo me devolverán el dinero del pedido?"),
    "de": (
        "Wann wird meine Bestellung verschickt?",
        "Wann bekomme ich mein Geld für die Bestellung zurück?",
    ),
    "fr": ("Quand ma commande sera-t-elle expédiée ?", "Quand serai-je remboursé de ma commande ?"),
}


@pytest.fixture(scope="module")
def gate() -> LanguageGate:
    return english_gate()


@pytest.mark.parametrize("language", sorted(NEAR_MISSES))
def test_questions_in_languages_without_a_path_get_no_semantic_route(
    gate: LanguageGate, language: str
) -> None:
    for question in NEAR_MISSES[language]:
        route = gate.route(question)
        assert route.path is None, (question, route)
        assert route.reason


@pytest.mark.parametrize(
    "question",
    ["What is the capital of France?", "how do i reset my passwrod pls", "Do you ship to Germany?"],
)
def test_english_questions_take_the_minilm_path(gate: LanguageGate, question: str) -> None:
    route = gate.route(question)
    assert (route.language, route.path) == ("en", "minilm")
    assert route.coverage >= 0.75


def test_coverage_counts_letters_spelt_one_by_one_as_unread(gate: LanguageGate) -> None:
    tokenizer = gate.paths[0].tokenizer
    assert tokenizer is not None
    assert coverage("Where is my parcel?", tokenizer) > 0.9
    for first, _ in NEAR_MISSES.values():
        if first[0] not in "¿WQ":  # the Latin-script ones are partly read
            assert coverage(first, tokenizer) < 0.5, first


def test_a_path_declared_for_a_language_it_cannot_read_still_declines(
    gate: LanguageGate,
) -> None:
    """Misconfiguring MiniLM for Chinese or Russian does not bring the wrong hits back."""
    tokenizer = gate.paths[0].tokenizer
    wide = LanguageGate(
        [SemanticPath(name="minilm", languages=frozenset({"en", "zh", "ru"}), tokenizer=tokenizer)]
    )
    for language in ("zh", "ru"):
        route = wide.route(NEAR_MISSES[language][0])
        assert route.language == language and route.path is None
        assert "reads" in (route.reason or "")


@pytest.mark.parametrize("language", sorted(NEAR_MISSES))
async def test_a_near_miss_without_a_path_is_never_a_semantic_hit(
    make_cache: CacheFactory, gate: LanguageGate, language: str
) -> None:
    """Even with an embedder that makes every question identical and a verifier that allows all."""
    cache = await make_cache(
        embedder=CollapsingEmbedder(), verifier=AllowAll(0.57), language_gate=gate
    )
    first, second = NEAR_MISSES[language]
    await cache.store("ns", "chat", chat(first), answer("ships tomorrow"))
    assert await cache.lookup("ns", "chat", chat(second)) is None
    hit = await cache.lookup("ns", "chat", chat(first))
    assert hit is not None and hit.kind == "exact"
    assert len(cache.index) == 0  # never embedded and indexed


async def test_english_still_matches_by_meaning_behind_the_gate(
    make_cache: CacheFactory, gate: LanguageGate
) -> None:
    cache = await make_cache(
        embedder=CollapsingEmbedder(), verifier=AllowAll(0.57), language_gate=gate
    )
    await cache.store("ns", "chat", chat("What are your opening hours?"), answer("9 to 5"))
    hit = await cache.lookup("ns", "chat", chat("when are you open?"))
    assert hit is not None and hit.kind == "semantic"
    # Never across languages, even where one path reads both.
    assert await cache.lookup("ns", "chat", chat("¿Cuál es su horario de apertura?")) is None
