# models (train / file / robustbench) -> results/models/{name}.pt
for st in stages("model"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: mem_mb=16000, runtime=720, gpu=gpus("model")
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
