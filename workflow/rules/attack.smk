# one grid cell: attack + metrics -> results/adv/..., results/cells/{defense}/{reversion}/{victim}/{attack}.json
for st in stages("attack"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
