# robust examples, one job per defense -> results/re/{defense}.pt
for st in stages("defend"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
