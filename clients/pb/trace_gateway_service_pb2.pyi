from . import bundles_pb2 as _bundles_pb2
from . import common_pb2 as _common_pb2
from . import feedback_pb2 as _feedback_pb2
from . import spans_pb2 as _spans_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportSpansRequest(_message.Message):
    __slots__ = ("spans", "experiment_name", "service_name")
    SPANS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[_spans_pb2.Span]
    experiment_name: str
    service_name: str
    def __init__(self, spans: _Optional[_Iterable[_Union[_spans_pb2.Span, _Mapping]]] = ..., experiment_name: _Optional[str] = ..., service_name: _Optional[str] = ...) -> None: ...

class ExportSpansResponse(_message.Message):
    __slots__ = ("partial_success",)
    PARTIAL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    partial_success: _common_pb2.PartialSuccess
    def __init__(self, partial_success: _Optional[_Union[_common_pb2.PartialSuccess, _Mapping]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_feedback_pb2.FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_feedback_pb2.FeedbackEvent, _Mapping]]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("partial_success",)
    PARTIAL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    partial_success: _common_pb2.PartialSuccess
    def __init__(self, partial_success: _Optional[_Union[_common_pb2.PartialSuccess, _Mapping]] = ...) -> None: ...

class RecordBundleEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_bundles_pb2.BundleEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_bundles_pb2.BundleEvent, _Mapping]]] = ...) -> None: ...

class RecordBundleEventsResponse(_message.Message):
    __slots__ = ("partial_success",)
    PARTIAL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    partial_success: _common_pb2.PartialSuccess
    def __init__(self, partial_success: _Optional[_Union[_common_pb2.PartialSuccess, _Mapping]] = ...) -> None: ...
