# shards joined: results/re/{defense}.pt from its shards; an attack cell scored from its shards
# (only when params.yaml's shards.defend / shards.attack > 1)
for st in stages("gather"):

    rule:
        name: st.rule
        input: inputs(st)
        output: outputs(st)
        resources: **resources_of(st.family)
        params: cmd=dvc_run(st)  # bound now: shell bodies run later, after the loop
        shell: "{params.cmd}"
