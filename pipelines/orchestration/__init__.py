"""Running syncs under an orchestrator or as parallel workers.

* :mod:`.jobs`: named syncs with durable, per-partition state (used by all of the below);
* :mod:`.partitioned`: one sync split into N hash partitions run as N parallel processes;
* :mod:`.dagster_defs`: Dagster ``Definitions``, one asset per sync, partitioned by workspace
  (needs the ``dagster`` extra);
* :mod:`.airflow_dag`: an Airflow 3 TaskFlow DAG, one task per sync (needs the ``airflow`` extra).
"""
