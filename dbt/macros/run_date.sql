{#- The run's logical date (YYYY-MM-DD), for a model that needs it: contribflow sets
    CONTRIBFLOW_RUN_DATE while dbt runs. It is read at execution time only, never while parsing, and
    it is not a --vars: dbt's saved parse (partial_parse.msgpack) is thrown away whenever the vars
    change, and a date that changes every day would make every run parse the whole project again. -#}
{% macro run_date() -%}
    {{ return(env_var('CONTRIBFLOW_RUN_DATE', '') if execute else '') }}
{%- endmacro %}
