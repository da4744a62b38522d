# tables and figures: metrics.csv, then papermill notebooks -> reports/
for st in stages("aggregate") + stages("report"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        localrule: True
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
