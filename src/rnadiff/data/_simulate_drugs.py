"""The embedded drug library of the simulator and the fingerprints its drug effects are made from.

Parent compounds (salts and counter-ions removed) of public drugs, chosen in structural families
(hydroxamate and benzamide HDAC inhibitors, BCR-ABL and EGFR kinase inhibitors, JAK inhibitors,
nucleoside analogues, fluoropyrimidines, PARP inhibitors, corticosteroids, common small drugs) so
that near neighbours and unrelated pairs both occur. SMILES follow the sci-Plex drug table
(``rnadiff.datasets.load_smiles()``) where the drug is in it, and PubChem otherwise.
"""

from __future__ import annotations

from rnadiff.data._molecules import FP_BITS, morgan_fingerprint, tanimoto

__all__ = ["DRUG_LIBRARY", "FP_BITS", "morgan_fingerprint", "tanimoto"]


# fmt: off
DRUG_LIBRARY: dict[str, str] = {
    # HDAC inhibitors, hydroxamic acids
    "Vorinostat": "ONC(=O)CCCCCCC(=O)Nc1ccccc1",
    "Belinostat": "O=C(/C=C/c1cccc(S(=O)(=O)Nc2ccccc2)c1)NO",
    "Panobinostat": "Cc1[nH]c2ccccc2c1CCNCc1ccc(/C=C/C(=O)NO)cc1",
    "Dacinostat": "O=C(/C=C/c1ccc(CN(CCO)CCc2c[nH]c3ccccc23)cc1)NO",
    "Pracinostat": "CCCCc1nc2cc(/C=C/C(=O)NO)ccc2n1CCN(CC)CC",
    "Abexinostat": "CN(C)Cc1c(C(=O)NCCOc2ccc(C(=O)NO)cc2)oc2ccccc12",
    "Givinostat": "CCN(CC)Cc1ccc2cc(COC(=O)Nc3ccc(C(=O)NO)cc3)ccc2c1",
    # HDAC inhibitors, ortho-amino benzamides
    "Entinostat": "Nc1ccccc1NC(=O)c1ccc(CNC(=O)OCc2cccnc2)cc1",
    "Mocetinostat": "Nc1ccccc1NC(=O)c1ccc(CNc2nccc(-c3cccnc3)n2)cc1",
    "Tacedinaline": "CC(=O)Nc1ccc(C(=O)Nc2ccccc2N)cc1",
    # BCR-ABL / SRC and multi-kinase inhibitors
    "Imatinib": "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(-c2cccnc2)n1",
    "Nilotinib": "Cc1cn(-c2cc(NC(=O)c3ccc(C)c(Nc4nccc(-c5cccnc5)n4)c3)cc(C(F)(F)F)c2)cn1",
    "Dasatinib": "Cc1nc(Nc2ncc(C(=O)Nc3c(C)cccc3Cl)s2)cc(N2CCN(CCO)CC2)n1",
    "Bosutinib": "COc1cc(Nc2c(C#N)cnc3cc(OCCCN4CCN(C)CC4)c(OC)cc23)c(Cl)cc1Cl",
    "Sorafenib": "CNC(=O)c1cc(Oc2ccc(NC(=O)Nc3ccc(Cl)c(C(F)(F)F)c3)cc2)ccn1",
    # EGFR inhibitors, 4-anilinoquinazolines
    "Gefitinib": "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1",
    "Erlotinib": "COCCOc1cc2ncnc(Nc3cccc(C#C)c3)c2cc1OCCOC",
    "Lapatinib": "CS(=O)(=O)CCNCc1ccc(-c2ccc3ncnc(Nc4ccc(OCc5cccc(F)c5)c(Cl)c4)c3c2)o1",
    # JAK inhibitors, pyrrolopyrimidines
    "Ruxolitinib": "N#CC[C@H](C1CCCC1)n1cc(-c2ncnc3[nH]ccc23)cn1",
    "Baricitinib": "CCS(=O)(=O)N1CC(CC#N)(n2cc(-c3ncnc4[nH]ccc34)cn2)C1",
    "Tofacitinib": "C[C@@H]1CCN(C(=O)CC#N)C[C@@H]1N(C)c1ncnc2[nH]ccc12",
    # MEK inhibitor, BET inhibitor
    "Trametinib": "CC(=O)Nc1cccc(-n2c(=O)n(C3CC3)c(=O)c3c(Nc4ccc(I)cc4F)n(C)c(=O)c(C)c32)c1",
    "JQ1": "Cc1sc2c(c1C)C(c1ccc(Cl)cc1)=N[C@@H](CC(=O)OC(C)(C)C)c1nnc(C)n1-2",
    # nucleoside analogues
    "Azacitidine": "Nc1ncn([C@@H]2O[C@H](CO)[C@@H](O)[C@H]2O)c(=O)n1",
    "Decitabine": "Nc1ncn([C@H]2C[C@H](O)[C@@H](CO)O2)c(=O)n1",
    "Cytarabine": "Nc1ccn([C@@H]2O[C@H](CO)[C@@H](O)[C@@H]2O)c(=O)n1",
    "Gemcitabine": "Nc1ccn([C@@H]2O[C@H](CO)[C@@H](O)C2(F)F)c(=O)n1",
    # fluoropyrimidines
    "Fluorouracil": "O=c1[nH]cc(F)c(=O)[nH]1",
    "Carmofur": "CCCCCCNC(=O)n1cc(F)c(=O)[nH]c1=O",
    "Capecitabine": "CCCCCOC(=O)Nc1nc(=O)n(C2OC(C)C(O)C2O)cc1F",
    # PARP inhibitors
    "Olaparib": "O=C(c1cc(Cc2n[nH]c(=O)c3ccccc23)ccc1F)N1CCN(C(=O)C2CC2)CC1",
    "Rucaparib": "CNCc1ccc(-c2[nH]c3cc(F)cc4c3c2CCNC4=O)cc1",
    "Veliparib": "C[C@]1(c2nc3c(C(N)=O)cccc3[nH]2)CCCN1",
    # corticosteroids
    "Hydrocortisone": (
        "C[C@]12CCC(=O)C=C1CC[C@@H]1[C@@H]2[C@@H](O)C[C@@]2(C)[C@H]1CC[C@]2(O)C(=O)CO"
    ),
    "Prednisolone": "C[C@]12C=CC(=O)C=C1CC[C@@H]1[C@@H]2[C@@H](O)C[C@@]2(C)[C@H]1CC[C@]2(O)C(=O)CO",
    "Dexamethasone": (
        "C[C@@H]1C[C@H]2[C@@H]3CCC4=CC(=O)C=C[C@]4(C)[C@@]3(F)[C@@H](O)C[C@]2(C)[C@@]1(O)C(=O)CO"
    ),
    # common small drugs and natural products
    "Aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "Ibuprofen": "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "Naproxen": "COc1ccc2cc([C@H](C)C(=O)O)ccc2c1",
    "Paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "Caffeine": "Cn1c(=O)c2c(ncn2C)n(C)c1=O",
    "Metformin": "CN(C)C(=N)NC(=N)N",
    "Celecoxib": "Cc1ccc(-c2cc(C(F)(F)F)nn2-c2ccc(S(N)(=O)=O)cc2)cc1",
    "Quercetin": "O=c1c(O)c(-c2ccc(O)c(O)c2)oc2cc(O)cc(O)c12",
    "Resveratrol": "Oc1ccc(/C=C/c2cc(O)cc(O)c2)cc1",
}
# fmt: on
