# adaptive attacker's input per defense x reversion -> results/inputs/{defense}/{reversion}.pt
for st in stages("revert"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
