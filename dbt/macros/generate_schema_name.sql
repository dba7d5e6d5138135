{#- Models land in the schema they name (staging, marts), not <target>_<name>: the roles' grants
    are written against those fixed schema names. -#}
{#- `contribflow reproduce` sets the var `scratch_schema`: every model then lands there (never in
    staging or marts_build, which the daily run owns). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if var('scratch_schema', none) is not none -%}
    {{ var('scratch_schema') }}
    {%- else -%}
    {{ custom_schema_name | trim if custom_schema_name is not none else target.schema }}
    {%- endif -%}
{%- endmacro %}
