-- The end-to-end assertions for one run, given as the psql variable run_id (the Argo workflow uid,
-- which the steps record as their run id). Prints one line per problem; nothing means the run is good.
-- `make e2e` runs this with psql inside the cluster's PostgreSQL pod (scripts/cluster.sh);
-- tests/test_cluster_e2e.py runs the same file after a local run, so the query is known to work.
--
--   psql -X -q -At -v ON_ERROR_STOP=1 -v run_id=<uid> -f scripts/e2e_check.sql

-- Every stage of contribflow/graph.py, then the exit handler (a test keeps the two in step); a
-- retried step has several rows and its last one is its outcome.
WITH expected (step, position) AS (
    VALUES ('init-db', 1), ('generate', 2), ('pick', 3), ('ingest', 4), ('dbt-build', 5),
           ('dbt-test', 6), ('publish', 7), ('finish', 8)
), latest AS (
    SELECT DISTINCT ON (step) step, status, error
      FROM meta.etl_run
     WHERE run_id = :'run_id'
     ORDER BY step, id DESC
)
SELECT CASE WHEN l.step IS NULL THEN format('step %s has no meta.etl_run row for run %s', e.step, :'run_id')
            ELSE format('step %s ended %s%s', e.step, l.status, coalesce(': ' || l.error, '')) END
  FROM expected e
  LEFT JOIN latest l USING (step)
 WHERE l.status IS DISTINCT FROM 'SUCCESS'
 ORDER BY e.position;

-- The run's date reached raw (a re-run of a loaded date adds nothing, but its rows are there).
SELECT format('raw.contributions holds no row of the run''s date %s', day)
  FROM (SELECT max(logical_date) AS day FROM meta.etl_run WHERE run_id = :'run_id') AS run
 WHERE day IS NOT NULL
   AND NOT EXISTS (SELECT FROM raw.contributions WHERE file_date = run.day);

-- The marts are non-empty. A mart dbt never built is reported, not an error that hides the lines above.
SELECT to_regclass('marts.fct_contributions') IS NOT NULL AS fct_exists,
       to_regclass('marts.dim_taxpayer') IS NOT NULL AS dim_exists \gset
\if :fct_exists
SELECT 'marts.fct_contributions is empty' WHERE NOT EXISTS (SELECT FROM marts.fct_contributions);
\else
SELECT 'marts.fct_contributions does not exist';
\endif
\if :dim_exists
SELECT 'marts.dim_taxpayer is empty' WHERE NOT EXISTS (SELECT FROM marts.dim_taxpayer);
\else
SELECT 'marts.dim_taxpayer does not exist';
\endif
