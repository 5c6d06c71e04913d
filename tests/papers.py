"""The suite's test paper: text written for the tests, laid out as a two-column PDF.

"Tern" is a made-up model family; the prose is written here (no sentence comes from a real
paper) and cites real, well-known works in the author-year styles papers use, so the RAG,
citation and reference tests read a typeset PDF — ligatures, hyphenation, columns, a
bibliography with hanging indents in two styles — without any file from outside the
repository. `conftest.test_paper_pdf` writes it once per session with
`structune.rag.sample.write_paper_pdf`.

Facts the retrieval tests ask for: the chat models are "optimized for dialogue", the
pretraining corpus grew "by 40%", and the models use "grouped-query attention".
"""

from __future__ import annotations

from pathlib import Path

from structune.rag.sample import write_paper_pdf

TITLE = "Tern: Small Open Language Models Tuned for Dialogue"
FILE_NAME = "tern.pdf"

SECTIONS: list[tuple[str, str]] = [
    (
        "Abstract",
        "We present Tern, a family of small pretrained and fine-tuned language models, "
        "from 120 million to 1.3 billion parameters. The chat versions, Tern-Chat, are "
        "optimized for dialogue and answer on a laptop without a graphics card. We set out "
        "our approach to fine-tuning and to safety at length, so that others can repeat it "
        "on small models of their own.",
    ),
    (
        "1 Introduction",
        "Large language models have shown remarkable abilities as general assistants "
        "(Brown et al., 2020; Ouyang et al., 2022), yet the most capable of them are too "
        "large to run on ordinary hardware. Open releases such as those of Touvron et al. "
        "(2023) and Scao et al. (2022) narrowed the gap between closed and open models, but "
        "they still need accelerators with tens of gigabytes of memory. Tern asks how far a "
        "model small enough for a laptop can go when its data and its fine-tuning are chosen "
        "with care.\n\n"
        "Our contributions are threefold. First, we release pretrained models trained on a "
        "corpus of public text that we filtered for quality. Second, we release Tern-Chat, "
        "tuned with supervised fine-tuning and reinforcement learning from human feedback "
        "as described by Christiano et al. (2017) and Stiennon et al. (2020). Third, we report "
        "every evaluation we ran, including the ones where Tern falls short.\n\n"
        "The rest of this paper is organised as follows. Section 2 describes pretraining, "
        "Section 3 the fine-tuning methods, and Section 4 the safety measures. We close with a "
        "discussion of the limitations that remain.",
    ),
    (
        "2 Pretraining",
        "Tern keeps the decoder-only transformer (Vaswani et al., 2017) and changes what it "
        "is fed. Three changes matter most: a stricter filter on the web text, a mix that "
        "gives code and reference works a larger share, and a pretraining corpus grown by 40% "
        "over the one behind our earlier models.",
    ),
    (
        "2.1 Pretraining Data",
        "The corpus is drawn only from public sources. Against our earlier release it is 40% "
        "larger, 1.4 trillion tokens in all, and pages from encyclopedias and textbooks are "
        "seen twice as often as forum posts, since a small model has little room for facts "
        "and should spend it on reliable ones. Near-duplicate pages were removed with the "
        "method of Penedo et al. (2023), and pages not in English were kept only where a "
        "quality classifier scored them highly (Wenzek et al., 2020).\n\n"
        "Sites that collect personal details about private people were dropped before any "
        "other step. Table 1 gives the share of every source and how many passes over it the "
        "schedule makes.",
    ),
    (
        "2.2 Training Details",
        "The layers follow common practice for open models: RMSNorm before each block "
        "(Zhang and Sennrich, 2019), SwiGLU in the feed-forward layers (Shazeer, 2020), and "
        "rotary position embeddings (Su et al., 2021). What is new for Tern is grouped-query "
        "attention (Ainslie et al., 2023): several query heads read one shared key and value "
        "head, which cuts the size of the cache a laptop has to hold while it decodes.\n\n"
        "Optimisation. All sizes use AdamW (Loshchilov and Hutter, 2019), a warm-up of 1500 "
        "steps, then a cosine decay to a tenth of the peak rate, with weight decay 0.1 and "
        "gradients clipped at norm 1.0. How many tokens each size saw was set from scaling "
        "laws for language models (Kaplan et al., 2020) and from compute-optimal budgets "
        "(Hoffmann et al., 2022).",
    ),
    (
        "3 Fine-tuning",
        "Turning a pretrained Tern into Tern-Chat takes two stages: instruction tuning on "
        "written demonstrations, then reinforcement learning from human feedback (RLHF; "
        "Christiano et al., 2017; Ouyang et al., 2022). Both stages together took less "
        "compute than a single day of pretraining.",
    ),
    (
        "3.1 Supervised Fine-Tuning",
        "The first stage starts from open instruction collections, following Chung et al. "
        "(2022) and Wei et al. (2022). Those collections repeat themselves and contain many "
        "weak answers, so we added a few thousand demonstrations written by our own "
        "annotators, which mattered more than the rest together [Zhou et al., 2023]. This "
        "stage trains for two epochs at a learning rate of 2e-5 with batches of 64 "
        "conversations.\n\n"
        "Each conversation is a prompt followed by the answer it should get. Several "
        "conversations are packed into one sequence, separated by a reserved token, and the "
        "loss is computed on answer tokens only: the model learns to answer, not to write "
        "prompts.",
    ),
    (
        "3.2 Human Feedback",
        "In the second stage annotators compare two answers to the same prompt and mark "
        "the better one. A reward model is trained on these comparisons to predict which "
        "answer people would choose, so that the policy can be scored on far more prompts "
        "than anyone could label by hand (Böhm et al., 2019; Stiennon et al., 2020).\n\n"
        "The chat model is then trained against the reward model with proximal policy "
        "optimization (Schulman et al., 2017), alternating with rounds of best-of-n sampling "
        "as Bai et al. (2022) describe. Li & Liang (2021) showed that a few tuned parameters "
        "can steer a frozen model; training only such parameters during RLHF is left for "
        "later work (e.g., Hu et al., 2021).",
    ),
    (
        "4 Safety",
        "Safety work on small models has received less attention than on large ones. We "
        "measure truthfulness, toxicity and bias with the benchmarks of Lin et al. (2022), "
        "Hartvigsen et al. (2022) and Dhamala et al. (2021), and we red-team the chat models "
        "with a group of internal volunteers. Context distillation (Askell et al., 2021) "
        "adds a safety preprompt during training and removes it at inference.\n\n"
        "None of these measures is complete. A model of this size can still be led to write "
        "harmful text by a determined user, and we ask everyone who deploys Tern-Chat to run "
        "their own safety tests before release.",
    ),
    (
        "5 Discussion",
        "Tern shows that careful data selection narrows the gap between small and large "
        "models on knowledge-heavy tasks less than on conversational ones. The chat models "
        "follow instructions well, but they still invent facts when asked about rare "
        "entities. Retrieval would help here, as shown by Lewis et al. (2020) and "
        "Karpukhin et al. (2020), and we plan to study it next.",
    ),
    (
        "6 Conclusion",
        "We introduced Tern, a new family of small pretrained and fine-tuned models. The "
        "models run on a laptop, answer in the structure they are asked for, and are "
        "released with every evaluation we ran. We hope the openness of this release helps "
        "others improve small models further.",
    ),
]
"""(heading, body) pairs; numbered headings become "N\\nTitle" in the PDF's text."""

# Two bibliography styles, as the reference task's two papers use: "Surname, I., and
# Surname, I. (year). Title. Venue." and "Given Surname and Given Surname. Title. Venue, year."
REFERENCES: list[str] = [
    "Ainslie, J., Lee-Thorp, J., de Jong, M., Zemlyanskiy, Y., Lebrón, F., and Sanghai, S. "
    "(2023). GQA: Training generalized multi-query transformer models from multi-head "
    "checkpoints. In Proceedings of the 2023 Conference on Empirical Methods in Natural "
    "Language Processing.",
    "Bai, Y., Jones, A., Ndousse, K., Askell, A., Chen, A., DasSarma, N., Drain, D., Fort, S., "
    "Ganguli, D., Henighan, T., et al. (2022). Training a helpful and harmless assistant with "
    "reinforcement learning from human feedback. arXiv preprint arXiv:2204.05862.",
    "Böhm, F., Gao, Y., Meyer, C. M., Shapira, O., Dagan, I., and Gurevych, I. (2019). Better "
    "rewards yield better summaries: Learning to summarise without references. arXiv preprint "
    "arXiv:1909.01214.",
    "Christiano, P. F., Leike, J., Brown, T., Martic, M., Legg, S., and Amodei, D. (2017). Deep "
    "reinforcement learning from human preferences. In Advances in Neural Information "
    "Processing Systems, pages 4299-4307.",
    "Diederik P. Kingma and Jimmy Ba. Adam: A method for stochastic optimization. In "
    "International Conference on Learning Representations, 2015.",
    "Edward J. Hu, Yelong Shen, Phillip Wallis, Zeyuan Allen-Zhu, Yuanzhi Li, Shean Wang, Lu "
    "Wang, and Weizhu Chen. LoRA: Low-rank adaptation of large language models. "
    "arXiv:2106.09685, 2021.",
    "Xiang Lisa Li and Percy Liang. Prefix-tuning: Optimizing continuous prompts for "
    "generation. arXiv:2101.00190, 2021.",
    "Schulman, J., Wolski, F., Dhariwal, P., Radford, A., and Klimov, O. (2017). Proximal "
    "policy optimization algorithms. arXiv preprint arXiv:1707.06347.",
]
REFERENCE_HEADING = "References"


def write_test_paper(path: Path) -> Path:
    """Write the test paper to `path`."""
    return write_paper_pdf(
        path,
        title=TITLE,
        sections=SECTIONS,
        references=REFERENCES,
        references_heading=REFERENCE_HEADING,
    )
