"""Step 2's quality gate (paper_personas/quality.py): what it rejects, and that a good answer passes."""

import pytest

from paper_personas.personas import answers_schema, load_personas
from paper_personas.quality import answers_problem, degenerate_reasons, script_of


@pytest.mark.parametrize(
    "field, reason",
    [
        ("I'm sorry, but the provided text does not contain enough detail to explain it.", "refusal:eli5.analogy"),
        ("**Analogy:** A toy box with a place for every toy, so nothing gets lost.", "repeated_label:eli5.analogy"),
        ("Analogy: A toy box with a place for every toy, so nothing is ever lost.", "repeated_label:eli5.analogy"),
        (
            "Une grande boîte à jouets où chaque jouet a sa place, donc on le trouve tout de suite sans chercher "
            "partout, et on range aussi vite le premier jour que le dernier, même avec beaucoup plus de jouets.",
            "wrong_language:eli5.analogy:fr",
        ),
        # Writing systems with no spaces between words: too few "words" for the language identifier, caught by
        # their script alone; and scripts that do space their words, caught before the identifier is asked.
        (
            "哈希表就像一个大玩具箱，每个玩具都有自己的位置，所以你总是知道去哪里找它，而且很快就能找到。",
            "wrong_script:eli5.analogy:cjk",
        ),
        (
            "ハッシュテーブルは大きなおもちゃ箱のようなもので、どのおもちゃにも決まった場所があります。",
            "wrong_script:eli5.analogy:cjk",
        ),
        ("ตารางแฮชเหมือนกล่องของเล่นใบใหญ่ที่ของเล่นทุกชิ้นมีที่ของตัวเองเสมอและหาเจอได้ทันที", "wrong_script:eli5.analogy:thai"),
        (
            "جدول التجزئة مثل صندوق ألعاب كبير لكل لعبة فيه مكانها الخاص فتجدها دائما بسرعة",
            "wrong_script:eli5.analogy:arabic",
        ),
        (
            "Хеш-таблица похожа на большой ящик для игрушек, где у каждой игрушки есть своё место.",
            "wrong_script:eli5.analogy:cyrillic",
        ),
        (
            " ".join(["Hash tables map each key to a slot. A lookup costs the same however many keys there are."] * 4),
            "copied:eli5.analogy",
        ),
    ],
)
def test_the_gate_rejects_refusals_repeated_labels_other_languages_and_copies(field, reason):
    good = "A toy box where every toy has its own labelled spot, so you always know where to look for it."
    answers = answers_schema(load_personas())(
        eli5={"analogy": field, "explanation": good},
        intuitive={"mechanism": good, "explanation": good},
        executive={"verdict": good, "summary": good},
    )
    section = "Hash tables map each key to a slot. A lookup costs the same however many keys there are. " * 6
    assert answers_problem(answers, load_personas(), section) == reason
    fine = answers_schema(load_personas())(
        eli5={"analogy": good, "explanation": good},
        intuitive={"mechanism": good, "explanation": good},
        executive={"verdict": good, "summary": good},
    )
    assert answers_problem(fine, load_personas(), section) is None


@pytest.mark.parametrize(
    "text, script",
    [
        ("A hash table maps each key to a slot, with α and β as its two parameters.", "LATIN"),
        ("哈希表把每个键映射到一个槽位上，查找的代价与键的数量无关。", "CJK"),
        ("short", None),  # too few letters to tell
    ],
)
def test_script_of(text, script):
    assert script_of(text) == script


GOOD_FIELD = (
    "Think of a big toy box where every toy has its own labelled spot, so when you want the red car you look at "
    "its label and reach straight into the right corner instead of digging through the whole pile of toys."
)


@pytest.mark.parametrize(
    "analogy, reason",
    [
        # What SmolLM2-135M wrote as a teacher (issue 22), and the shapes around it.
        ("map_reduce_stream_to_stream_stream_to_map_reduce_stream_stream_to_stream_map_reduce", "identifier_slug"),
        ("5. 4. 6. 7. 8. 9. 10. 11. 12. 13. 14. 15. 16. 17. 18. 19. 20. 21. 22.", "numbered_fragments"),
        ("the toy box the toy box the toy box the toy box the toy box the toy box the toy box", "repetitive"),
        ("A toy box with spots, like a shelf.", "too_short"),  # 8 words, where at least 40 are asked
    ],
)
def test_the_gate_rejects_what_evaluate_calls_degenerate_and_both_use_one_function(analogy, reason):
    personas = load_personas()
    eli5 = personas[0]
    answers = answers_schema(personas)(
        eli5={"analogy": analogy, "explanation": GOOD_FIELD},
        intuitive={"mechanism": GOOD_FIELD, "explanation": GOOD_FIELD},
        executive={"verdict": GOOD_FIELD, "summary": GOOD_FIELD},
    )
    section = "Hash tables map each key to a slot. A lookup costs the same however many keys there are. " * 6
    problem = answers_problem(answers, personas, section)
    rendered = eli5.render({"analogy": analogy, "explanation": GOOD_FIELD})
    assert reason in degenerate_reasons(eli5, rendered)  # what evaluate.py reports for this answer
    assert problem is not None and problem.split(":")[0] in (reason, "too_short")  # the 40-character floor is first


def test_a_real_answer_is_not_degenerate_even_naming_an_identifier_or_a_numbered_step():
    eli5 = load_personas()[0]
    text = GOOD_FIELD + " The label works like `hash_table_size` in code: step 1. read it, then take the toy."
    assert degenerate_reasons(eli5, eli5.render({"analogy": text, "explanation": GOOD_FIELD})) == []


@pytest.mark.parametrize(
    "noise",
    [
        # What the tiny random Llama wrote as a teacher: long enough, no loop, mostly Latin letters, and not words.
        "Today Today Today bookexecutive executive executive executive Decem IXXXstst Knlolololo method method "
        "constant constantAn onceppdidididiiv maps maps maps maps stor keececryryryryry ate Today exececem",
        "MecMecMecMecMecMecMecokokok Worthj You time onatHMechan once cccccccccQQQQQQQQ ainainSSSSSS lookalo uncteee "
        "indindindind sts upsupsupsups b D lookups ow once Kn eeeee stind constant",
    ],
)
def test_noise_that_reads_as_no_language_is_rejected_as_unreadable(noise):
    personas = load_personas()
    answers = answers_schema(personas)(
        eli5={"analogy": noise, "explanation": GOOD_FIELD},
        intuitive={"mechanism": GOOD_FIELD, "explanation": GOOD_FIELD},
        executive={"verdict": GOOD_FIELD, "summary": GOOD_FIELD},
    )
    section = "Hash tables map each key to a slot. A lookup costs the same however many keys there are. " * 6
    assert answers_problem(answers, personas, section).split(":")[0] in ("unreadable", "repetitive")


@pytest.mark.parametrize(
    "text, is_contents",
    [
        ("1.1 Preliminaries . . . . . . . 2\n\n1.2 Technical Overview . . . . . 4\n\n1.3 Related Work . . . . 8", True),
        ("**1**\n\n2.1 Invariants .................. 6\n2.2 Controls ........ 7\n2.3 Operations ....... x", True),
        ("We wait... and then it works. The cache fills . . . and empties.\nA plain second line of text.", False),
        ("1. First step.\n2. Second step.\n3. Third step.\n4. Fourth step.", False),  # a list, not contents
    ],
)
def test_a_table_of_contents_is_told_from_text(text, is_contents):
    from paper_personas.quality import contents_page

    assert contents_page(text) is is_contents


@pytest.mark.parametrize(
    "text, low, high",
    [
        (
            "Graph coloring is arguably the most popular topic in graph theory. It is also one of the most studied "
            "topics in algorithms, because it is hard to approximate (see Section 2).",
            0.9,
            1.0,
        ),
        (
            "**Fulfilling Goal 2 (MPTCP fairness):** the scheduler closes a subflow whose rate is state-of-the-art.",
            0.9,
            1.0,
        ),
        # pseudo-code as PDF extraction writes it: line numbers, symbols, Unicode's mathematical letters
        ("**23** _𝐾_ ←− 0\n\n**24** _𝑜𝑟𝑖𝑔𝑖𝑛_ _ _𝑝𝑜𝑖𝑛𝑡_ ←− _𝑐𝑤𝑛𝑑_\n\n**25** _𝑎𝑐𝑘_ _ _𝑐𝑛𝑡_ ←− 1", 0.0, 0.0),
        ("_𝐵𝐵𝑅.𝑠𝑡𝑎𝑡𝑒_ == _𝑃𝑟𝑜𝑏𝑒𝑅𝑇𝑇_ **then**\n\n**102** _𝐵𝐵𝑅_ _ _𝐻𝑎𝑛𝑑𝑙𝑒_ () ;", 0.05, 0.2),
        ("| 0.91 | 12,034 | 3.2 ms |\n| 0.87 | 9,112 | 2.9 ms |", 0.1, 0.2),  # table cells: only "ms" is a word
        ("", 0.0, 0.0),
    ],
)
def test_prose_share_tells_paragraphs_from_pseudo_code_and_tables(text, low, high):
    from paper_personas.quality import prose_share

    assert low <= prose_share(text) <= high


def test_a_one_sentence_verdict_as_the_real_teacher_writes_it_passes_the_gate():
    """Gemini wrote Executive verdicts of 18 words at the median, as the instructions ask (one sentence); the
    gate used to reject every one under 20 words, and the unit of three personas with it."""
    personas = load_personas()
    verdict = "Adopt it: constant-time lookups cut server cost, and no new hardware is needed."  # 13 words
    answers = answers_schema(personas)(
        eli5={"analogy": GOOD_FIELD, "explanation": GOOD_FIELD},
        intuitive={"mechanism": GOOD_FIELD, "explanation": GOOD_FIELD},
        executive={"verdict": verdict, "summary": GOOD_FIELD},
    )
    section = "Hash tables map each key to a slot. A lookup costs the same however many keys there are. " * 6
    assert answers_problem(answers, personas, section) is None
    assert degenerate_reasons(personas[2], personas[2].render({"verdict": "Adopt.", "summary": GOOD_FIELD})) == [
        "too_short"
    ]
