{#- Models land in the schema they name (staging, marts), not <target>_<name>: the roles' grants
    are written against those fixed schema names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name is not none else target.schema }}
{%- endmacro %}
