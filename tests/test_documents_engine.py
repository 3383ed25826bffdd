"""A folder of real office documents answered on the real engine in the Docker sandbox: the answer is only in the
PDF, the encrypted PDF is listed as unreadable, and a second query over the folder converts nothing."""

from __future__ import annotations

import pytest
from document_samples import write_docx, write_encrypted_pdf, write_pdf, write_xlsx

from rlm_local import RLM, RLMConfig
from rlm_local.config import EngineConfig

pytestmark = pytest.mark.engine


def test_a_folder_of_documents_answers_from_the_pdf_and_lists_the_unreadable_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RLM_LOCAL_DOCUMENT_CACHE", str(tmp_path / "cache"))  # a cold conversion cache
    folder = tmp_path / "quarterly"
    folder.mkdir()
    write_pdf(
        folder / "operations-report.pdf",
        [
            "Operations report, third quarter.\nStaffing was stable and two new loading docks opened in August.",
            "Shipments.\nThe Tilbury warehouse shipped 4,812 pallets in the quarter, its best result so far.\n"
            "Returns fell to under one percent.",
        ],
    )
    write_encrypted_pdf(folder / "board-minutes.pdf", "Minutes of the board meeting. Confidential.")
    write_docx(
        folder / "staff-memo.docx",
        ["Memo to all staff", "The canteen moves to the ground floor from Monday.", "Parking is on level B."],
    )
    write_xlsx(folder / "budget.xlsx", {"Q3": [["line", "amount"], ["forklift leases", 18400], ["cleaning", 2300]]})
    (folder / "intranet.html").write_text(
        "<html><title>Intranet news</title><body><h1>News</h1><p>The summer party is on 12 September.</p></body></html>"
    )
    query = "What did the Tilbury warehouse ship last quarter?"
    with RLM(RLMConfig(sandbox="docker", root=EngineConfig(max_model_len=4096))) as rlm:
        first = rlm.completion(query, folder, trajectory_path=tmp_path / "first.jsonl")
        second = rlm.completion(query, folder)
    print(first.answer, first.stop_detail, "|", second.answer)
    assert first.answer is not None and "4,812" in first.answer.replace("4812", "4,812"), first.answer
    assert first.unreadable == [{"path": "board-minutes.pdf", "reason": "encrypted PDF: it needs a password"}]
    converted = [e["context"] for e in (first.trajectory[0], second.trajectory[0])]
    assert first.trajectory[0]["event"] == "run_start"
    assert (converted[0]["converted"], converted[0]["conversion_cache_hits"]) == (4, 0), converted[0]
    assert (converted[1]["converted"], converted[1]["conversion_cache_hits"]) == (0, 4), converted[1]
    assert second.unreadable == first.unreadable
