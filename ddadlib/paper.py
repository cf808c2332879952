"""The paper's vocabulary and reference numbers, each with its source (see ``docs/method.md``).

Score and backbone names, their readable titles, the anomaly rates of the ablation and the AUCs
the paper reports. Every other module takes them from here.
"""

from __future__ import annotations

#: The image scores of a DDAD run, in the order tables and views show them (``docs/method.md``
#: "Scores"): reconstruction error of one network, of the ensemble, intra- and inter-discrepancy.
SCORE_NAMES = ("rec", "rec_ensemble", "intra", "inter")

#: Readable names of :data:`SCORE_NAMES`; other names are shown as given.
SCORE_TITLES: dict[str, str] = {
    "rec": "Rec (single network)",
    "rec_ensemble": "Rec (ensemble)",
    "intra": "Intra-discrepancy",
    "inter": "Inter-discrepancy",
}

#: The journal version's refinement (DDAD-ASR; Cai et al., Medical Image Analysis 86:102794,
#: 2023): name of its input -> the refined image score (R_intra: the intra-discrepancy map
#: alone; R_dual: inter and intra stacked).
REFINED_SCORES = {"intra": "r_intra", "dual": "r_dual"}
SCORE_TITLES.update({"r_intra": "R_intra (refined)", "r_dual": "R_dual (refined)"})

#: ASR-Net's training in the journal: focal loss with this gamma; Adam with this learning rate,
#: PAPER_BETAS and this weight decay; batches of 8; 100 epochs.
ASR_EPOCHS = 100
ASR_BATCH_SIZE = 8
ASR_LR = 1e-4
ASR_WEIGHT_DECAY = 1e-4
ASR_GAMMA = 2.0

#: The backbones of Table 1, in its order.
TABLE1_BACKBONES = ("ae", "memae", "aeu")

#: The method Table 2 compares DDAD with beside the Table 1 backbones (trained on Dn only).
TABLE2_BASELINES = ("fanogan",)

#: The rows of Table 2's reconstruction baselines, in its order.
TABLE2_ROWS = ("ae", "memae", "fanogan", "aeu")

#: Readable backbone names, in the order tables and views list them (Table 1, Table 2).
BACKBONE_TITLES = {"ae": "AE", "memae": "MemAE", "aeu": "AE-U", "fanogan": "f-AnoGAN"}

#: The anomaly rate of Table 1 and Table 2.
TABLE_AR = 0.6

#: The anomaly rates of the AR ablation (Fig. 2).
PAPER_ARS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

#: The paper's M, the number of unlabeled images in Du.
PAPER_UNLABELED = 4000

#: The training settings of the paper and the authors' code (``docs/method.md`` "Training"):
#: Adam with this learning rate and these betas, batches of 64, 250 epochs, K = 3 networks a
#: module. Every default of the library is taken from here.
PAPER_LR = 5e-4
PAPER_BETAS = (0.5, 0.999)
PAPER_BATCH_SIZE = 64
PAPER_EPOCHS = 250
PAPER_K = 3
#: The size of the AE's latent code in the authors' code (``docs/method.md`` "Backbones").
PAPER_LATENT = 16

#: The latent size, revisited: the same authors later reported that a 4-d latent code gave the AE
#: a higher AUC on RSNA than its 16-d bottleneck (Cai et al.'s follow-up to DDAD, as quoted in the
#: course's issue 13). AUC by latent size.
LATENT_STUDY = {"dataset": "RSNA", "auc": {16: 0.675, 4: 0.729}}

#: The authors' split sizes: Dn and the test images per class (``docs/method.md`` "Data").
PAPER_SIZES = {
    "rsna": {"n_normal": 3851, "n_test": 1000},
    "vinbigdata": {"n_normal": 4000, "n_test": 1000},
}

#: The paper's AUCs (``docs/method.md`` "The paper's numbers"): Table 1 (rec single, rec
#: ensemble, intra, inter) at AR 0.6 on RSNA / VinBigData / CXAD; f-AnoGAN's rec from Table 2;
#: the AR ablation (Fig. 2) on RSNA with the AE.
PAPER = {
    "datasets": ("RSNA", "VinBigData", "CXAD"),
    "table": {
        "ae": {
            "rec": (0.669, 0.559, 0.556),
            "rec_ensemble": (0.669, 0.555, 0.550),
            "intra": (0.694, 0.601, 0.589),
            "inter": (0.815, 0.710, 0.621),
        },
        "memae": {
            "rec": (0.680, 0.558, 0.560),
            "rec_ensemble": (0.670, 0.553, 0.552),
            "intra": (0.729, 0.595, 0.594),
            "inter": (0.788, 0.690, 0.599),
        },
        "aeu": {
            "rec": (0.867, 0.738, 0.664),
            "rec_ensemble": (0.866, 0.731, 0.659),
            "intra": (0.873, 0.743, 0.692),
            "inter": (0.910, 0.859, 0.714),
        },
        "fanogan": {"rec": (0.798, 0.763, 0.619)},
    },
    "ablation_ars": PAPER_ARS,
    "ablation": {
        "inter": (0.703, 0.782, 0.802, 0.815, 0.824, 0.822),
        "intra": (0.694,) * 6,
        "rec": (0.669,) * 6,
    },
}
