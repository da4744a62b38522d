# models (train / file / robustbench) -> results/models/{name}.pt
for st in stages("model"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: mem_mb=16000, runtime=720, gpu=gpus("model")
        shell: dvc_run(st)
