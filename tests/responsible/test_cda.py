"""Counterfactual data augmentation: the swaps (English, Chinese, the her/his rule), the word
lists and user files, and which rows and fields get copies."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from lmforge.config import CdaConfig
from lmforge.errors import UserError
from lmforge.responsible.cda import augment, builtin_lists, load_pairs, swapper


@pytest.fixture(scope="module")
def swap():
    return swapper(CdaConfig(enabled=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # her: "his" before a noun or adjective, "him" before a function word or punctuation
        ("He gave her the book.", "She gave him the book."),
        ("I saw her yesterday", "I saw him yesterday"),
        ("She went with her.", "He went with him."),
        ("Her book is on his desk.", "His book is on her desk."),
        ("She loves her own car", "He loves his own car"),
        ("I told her that he left", "I told him that she left"),
        # his: "her" before a noun, "hers" when it stands alone
        ("The book is his.", "The book is hers."),
        ("This is his and that is hers.", "This is hers and that is his."),
        ("His is better", "Hers is better"),
        # case kept, whole words only, punctuation and possessives untouched
        ("HE IS HER FATHER", "SHE IS HIS MOTHER"),
        ("he's the man's son-in-law!", "she's the woman's daughter-in-law!"),
        (
            "Mankind, manly, human, Manchester, shepherd.",
            "Mankind, manly, human, Manchester, shepherd.",
        ),
        ("Mr. Smith met Mrs. Jones and Ms. Lee", "Ms. Smith met Mr. Jones and Mr. Lee"),
        ("The king and the queens", "The queen and the kings"),
        ("他是man", "她是woman"),
    ],
)
def test_english_swaps(swap, text: str, expected: str) -> None:
    assert swap.swap(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("他是我的丈夫。", "她是我的妻子。"),
        ("她们的女儿和儿子", "他们的儿子和女儿"),
        ("男孩和女孩，男人和女人", "女孩和男孩，女人和男人"),
        ("她的男朋友是男演员", "他的女朋友是女演员"),
        ("爸爸和妈妈，哥哥和姐姐", "妈妈和爸爸，姐姐和哥哥"),
        # characters inside unrelated words stay: other, guitar, others, women, children
        ("其他人喜欢他的吉他", "其他人喜欢她的吉他"),
        ("妇女节，子女，男女平等，他", "妇女节，子女，男女平等，她"),
        ("女婿和儿媳", "儿媳和女婿"),
        ("没有性别的句子。", "没有性别的句子。"),
    ],
)
def test_chinese_swaps(swap, text: str, expected: str) -> None:
    assert swap.swap(text) == expected


def test_swapping_twice_restores_unambiguous_text(swap) -> None:
    text = "The woman and her husband; 他和她的父亲"
    assert swap.swap(swap.swap(text)) == text


def test_builtin_lists_and_categories() -> None:
    assert "gender" in builtin_lists()
    pairs = load_pairs(CdaConfig(enabled=True, languages=["zh"]))
    assert {p.language for p in pairs} == {"zh"}
    assert {p.category for p in pairs} == {"gender"}
    with pytest.raises(
        UserError, match=r"augment.cda.lists: no built-in word list 'race' \(valid: .*gender"
    ):
        load_pairs(CdaConfig(enabled=True, lists=["race"]))
    with pytest.raises(UserError, match=r"augment.cda.categories: no pairs of category 'age'"):
        load_pairs(CdaConfig(enabled=True, categories=["age"]))


def test_user_file_extends_and_wins(tmp_path: Path) -> None:
    user = tmp_path / "pairs.tsv"
    user.write_text(
        "# mine\nage\ten\tyoung\told\ngender\ten\tlady\tlord\ngender\tzh\t老师\t老师\n",
        encoding="utf-8",
    )
    swap = swapper(CdaConfig(enabled=True, user_file=str(user)))
    assert swap.swap("A young lady and an old man") == "A old lord and an young woman"
    assert swap.swap("他是老师") == "她是老师"
    only_age = swapper(CdaConfig(enabled=True, user_file=str(user), categories=["age"]))
    assert only_age.swap("the young man") == "the old man"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("gender\ten\the", r"pairs.tsv:2: expected 4 tab-separated fields .* got 3"),
        ("gender\tfr\til\telle", r"pairs.tsv:2: language 'fr' is not one of: en, zh"),
        ("Gender\ten\the\tshe", r"pairs.tsv:2: category 'Gender' must be lowercase"),
    ],
)
def test_bad_user_file_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    user = tmp_path / "pairs.tsv"
    user.write_text(f"gender\ten\tboy\tgirl\n{line}\n", encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_pairs(CdaConfig(enabled=True, user_file=str(user)))
    with pytest.raises(UserError, match=r"augment.cda.user_file: .*missing.tsv does not exist"):
        load_pairs(CdaConfig(enabled=True, user_file=str(tmp_path / "missing.tsv")))


def test_augment_adds_one_copy_per_mentioning_row(swap) -> None:
    rows = datasets.Dataset.from_list(
        [
            {"source": "He is her father.", "target": "他是她的父亲。", "provenance": "a:1"},
            {"source": "The cat sleeps.", "target": "猫在睡觉。", "provenance": "a:2"},
            {"source": "Good morning.", "target": "她早上好。", "provenance": "a:3"},
        ]
    )
    out = augment(rows, "translate", swap)
    assert out.to_list() == [
        *rows.to_list(),
        {"source": "She is his mother.", "target": "她是他的母亲。", "provenance": "a:1"},
        {"source": "Good morning.", "target": "他早上好。", "provenance": "a:3"},
    ]
    # only the fields asked for are swapped; a row changed in none of them gets no copy
    only_source = augment(rows, "translate", swap, fields=["source"])
    assert only_source["target"][3:] == ["他是她的父亲。"]
    assert len(only_source) == 4


def test_augment_swaps_optional_fields_and_checks_field_names(swap) -> None:
    rows = datasets.Dataset.from_list(
        [{"question": "Who is he?", "context": "He is a king.", "answer": "a king"}]
    )
    out = augment(rows, "qa", swap)
    assert out[1] == {"question": "Who is she?", "context": "She is a queen.", "answer": "a queen"}
    with pytest.raises(
        UserError, match=r"'text' is not a field of task qa \(valid: question, answer, context\)"
    ):
        augment(rows, "qa", swap, fields=["text"])
