"""The evaluation task types, one module each; every module registers its
:class:`~ctem.evaluation.task_type.TaskType` record (they are imported by
:func:`ctem.evaluation.task_type.task_types`)."""
