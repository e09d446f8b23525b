"""The paper's numbers in the package match the paper's text (lines copied from the paper)."""

from pathlib import Path

import pytest

from siamdetr.report.paper import load_paper

PAPER = Path(__file__).parents[3] / "shared" / "paper" / "siamese_detr.md"


@pytest.mark.parametrize(
    "table, index, line",
    [
        ("table1", 4, "ours\tSwAV R50\tVanilla\t100\t150\t42.0\t63.1\t44.2\t19.6\t46.0\t61.9"),
        ("table1", 18, "ours\tSwAV R50\tDeform-MS\t300\t50\t46.3\t64.6\t50.5\t28.1\t50.1\t61.5"),
        ("table2", 0, "from scratch\tSwAV R50\tVanilla\t-\t100\t50\t28.5\t47.5\t29.4\t1.3\t7.4\t40.3"),
        ("table2", 22, "ours\tSwAV R50\tConditional\tCOCO\t100\t50\t57.7\t80.9\t62.5\t11.0\t40.4\t70.9"),
        ("table3", 5, "ours (e)\tmulti-view\tR-C + G\t58.1"),
        ("table4", 13, "ours\tCOCO→VOC\tEdgeboxes\t57.7"),
    ],
)
def test_cells_match_the_paper_text(table, index, line):
    if PAPER.is_file():  # next to our checkout: the line is really the paper's (CI clones elsewhere)
        assert line in PAPER.read_text().replace("<b>", "").replace("</b>", "").splitlines()
    row = load_paper()[table].rows[index]
    printed = [float(v) for v in line.split("\t")[-len(row.values) :]]
    assert list(row.values.values()) == printed
    assert row.labels["method"] == line.split("\t")[0]


def test_row_counts_and_groups_are_the_papers():
    tables = load_paper()
    assert [len(t.rows) for t in tables.values()] == [19, 23, 6, 14]
    groups = [r.group for r in tables["table2"].rows]
    assert groups.count("Conditional 100 queries 50 epochs, COCO-pretrained") == 4  # scratch + 3 methods
