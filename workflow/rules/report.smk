# tables and figures: metrics.csv, then papermill notebooks -> reports/
for st in stages("aggregate") + stages("report"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        localrule: True
        resources: mem_mb=4000, runtime=30
        shell: dvc_run(st)
