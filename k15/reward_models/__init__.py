"""Learned reward models for free-form answers (paper §2.3.5): a Classic RM and a Chain-of-Thought RM.

    config.py       RewardModelConfig: data sizes, training of each RM, verdict format, context
    data.py         JudgeExample (question, reference, response, label, rationale, source), built from
                    the policy's rollouts and surface-form rewrites (k15.synthetic.freeform), JSONL I/O
    verdicts.py     the CoT RM's verdict: {"correct": true} or correct: true, and its parser
    classic.py      the scalar-head RM (sequence classification, binary cross-entropy)
    cot.py          the CoT RM (SFT on rationale + verdict, judged by greedy generation)
    checkpoints.py  export / reload as Hugging Face directories with a marker naming the kind
    spotcheck.py    agreement with the checker: accuracy, precision / recall on wrong answers
    stages.py       run_rm_data, run_classic_rm, run_cot_rm
"""
