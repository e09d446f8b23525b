"""One module per dvc.yaml stage, named as the stage, each with `run(cfg, ...) -> outputs`: data, backbone,
proposals, pretrain, finetune, report. The CLI parses arguments and calls them; below them the library
takes config sections or plain values."""
