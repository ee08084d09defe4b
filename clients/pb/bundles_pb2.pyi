import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_STAGE_UNSPECIFIED: _ClassVar[EvaluationStage]
    EVALUATION_STAGE_OFFLINE: _ClassVar[EvaluationStage]
    EVALUATION_STAGE_SHADOW: _ClassVar[EvaluationStage]
    EVALUATION_STAGE_CANARY: _ClassVar[EvaluationStage]

class EvaluationVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_VERDICT_UNSPECIFIED: _ClassVar[EvaluationVerdict]
    EVALUATION_VERDICT_PASS: _ClassVar[EvaluationVerdict]
    EVALUATION_VERDICT_FAIL: _ClassVar[EvaluationVerdict]

class SignOffArea(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGN_OFF_AREA_UNSPECIFIED: _ClassVar[SignOffArea]
    SIGN_OFF_AREA_PROMPT: _ClassVar[SignOffArea]
    SIGN_OFF_AREA_GUARDRAIL: _ClassVar[SignOffArea]
    SIGN_OFF_AREA_RELEASE: _ClassVar[SignOffArea]
EVALUATION_STAGE_UNSPECIFIED: EvaluationStage
EVALUATION_STAGE_OFFLINE: EvaluationStage
EVALUATION_STAGE_SHADOW: EvaluationStage
EVALUATION_STAGE_CANARY: EvaluationStage
EVALUATION_VERDICT_UNSPECIFIED: EvaluationVerdict
EVALUATION_VERDICT_PASS: EvaluationVerdict
EVALUATION_VERDICT_FAIL: EvaluationVerdict
SIGN_OFF_AREA_UNSPECIFIED: SignOffArea
SIGN_OFF_AREA_PROMPT: SignOffArea
SIGN_OFF_AREA_GUARDRAIL: SignOffArea
SIGN_OFF_AREA_RELEASE: SignOffArea

class BundleComponents(_message.Message):
    __slots__ = ("intent_classifier_version", "reranker_version", "prompt_version", "bedrock_model_id", "retriever_policy_version", "guardrail_ruleset_version")
    INTENT_CLASSIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    RERANKER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BEDROCK_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    RETRIEVER_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_RULESET_VERSION_FIELD_NUMBER: _ClassVar[int]
    intent_classifier_version: str
    reranker_version: str
    prompt_version: str
    bedrock_model_id: str
    retriever_policy_version: str
    guardrail_ruleset_version: str
    def __init__(self, intent_classifier_version: _Optional[str] = ..., reranker_version: _Optional[str] = ..., prompt_version: _Optional[str] = ..., bedrock_model_id: _Optional[str] = ..., retriever_policy_version: _Optional[str] = ..., guardrail_ruleset_version: _Optional[str] = ...) -> None: ...

class BundleRegistered(_message.Message):
    __slots__ = ("components",)
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    components: BundleComponents
    def __init__(self, components: _Optional[_Union[BundleComponents, _Mapping]] = ...) -> None: ...

class BundleEvaluated(_message.Message):
    __slots__ = ("stage", "metrics", "verdict", "dataset_version", "traffic_percent", "run_id")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    stage: EvaluationStage
    metrics: _containers.ScalarMap[str, float]
    verdict: EvaluationVerdict
    dataset_version: str
    traffic_percent: float
    run_id: str
    def __init__(self, stage: _Optional[_Union[EvaluationStage, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., verdict: _Optional[_Union[EvaluationVerdict, str]] = ..., dataset_version: _Optional[str] = ..., traffic_percent: _Optional[float] = ..., run_id: _Optional[str] = ...) -> None: ...

class BundleSignedOff(_message.Message):
    __slots__ = ("area", "approver_id")
    AREA_FIELD_NUMBER: _ClassVar[int]
    APPROVER_ID_FIELD_NUMBER: _ClassVar[int]
    area: SignOffArea
    approver_id: str
    def __init__(self, area: _Optional[_Union[SignOffArea, str]] = ..., approver_id: _Optional[str] = ...) -> None: ...

class BundlePromoted(_message.Message):
    __slots__ = ("previous_version",)
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    previous_version: str
    def __init__(self, previous_version: _Optional[str] = ...) -> None: ...

class BundleRolledBack(_message.Message):
    __slots__ = ("to_version", "reason")
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    to_version: str
    reason: str
    def __init__(self, to_version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BundleEvent(_message.Message):
    __slots__ = ("event_id", "bundle_name", "bundle_version", "time", "actor_id", "note", "registered", "evaluated", "signed_off", "promoted", "rolled_back")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    SIGNED_OFF_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    bundle_name: str
    bundle_version: str
    time: _timestamp_pb2.Timestamp
    actor_id: str
    note: str
    registered: BundleRegistered
    evaluated: BundleEvaluated
    signed_off: BundleSignedOff
    promoted: BundlePromoted
    rolled_back: BundleRolledBack
    def __init__(self, event_id: _Optional[str] = ..., bundle_name: _Optional[str] = ..., bundle_version: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor_id: _Optional[str] = ..., note: _Optional[str] = ..., registered: _Optional[_Union[BundleRegistered, _Mapping]] = ..., evaluated: _Optional[_Union[BundleEvaluated, _Mapping]] = ..., signed_off: _Optional[_Union[BundleSignedOff, _Mapping]] = ..., promoted: _Optional[_Union[BundlePromoted, _Mapping]] = ..., rolled_back: _Optional[_Union[BundleRolledBack, _Mapping]] = ...) -> None: ...
