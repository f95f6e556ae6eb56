"""Train a text-embedding model: `python train.py [overrides]` (same as `ctem-train`).

Examples:
    python train.py                                   # the quickstart (CPU, a few minutes)
    python train.py --help                            # config groups and options
    python train.py --cfg job                         # print the composed config
    python train.py model=tiny data=pairs data.train_files=[pairs.jsonl] trainer.max_steps=100
    python train.py -m data.batch_size=256,2048       # a sweep, one folder per run
"""

from ctem.cli.train import main

if __name__ == "__main__":
    main()
