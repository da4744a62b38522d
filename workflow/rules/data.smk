# dataset -> results/data/{train,test}.pt
for st in stages("data"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
