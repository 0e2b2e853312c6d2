"""The papers whose tables are reproduced, cited by title, venue and arXiv id, with the official code."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRef:
    name: str
    title: str
    authors: str
    venue: str
    arxiv: str
    code: str

    def cite(self, where: str = "") -> str:
        """Short form for a table cell: ``TransMix (Chen et al., CVPR 2022, arXiv:2111.09833) Table 1``."""
        return f"{self.name} ({self.authors}, {self.venue}, arXiv:{self.arxiv})" + (f" {where}" if where else "")

    def reference(self) -> str:
        """Full form for the table's list of papers."""
        return f"{self.title}. {self.authors}, {self.venue}. arXiv:{self.arxiv}. Official code: {self.code}"


TRANSMIX = PaperRef("TransMix", "TransMix: Attend to Mix for Vision Transformers", "Chen et al.", "CVPR 2022",
                    "2111.09833", "https://github.com/Beckschen/TransMix")
TOKENMIX = PaperRef("TokenMix", "TokenMix: Rethinking Image Mixing for Data Augmentation in Vision Transformers",
                    "Liu et al.", "ECCV 2022", "2207.08409", "https://github.com/Sense-X/TokenMix")
MIXMO = PaperRef("MixMo", "MixMo: Mixing Multiple Inputs for Multiple Outputs via Deep Subnetworks",
                 "Ramé, Sun, Cord", "ICCV 2021", "2103.06132", "https://github.com/alexrame/mixmo-pytorch")
