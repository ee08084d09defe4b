import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_VALUE_UNSPECIFIED: _ClassVar[FeedbackValue]
    FEEDBACK_VALUE_THUMBS_UP: _ClassVar[FeedbackValue]
    FEEDBACK_VALUE_THUMBS_DOWN: _ClassVar[FeedbackValue]
FEEDBACK_VALUE_UNSPECIFIED: FeedbackValue
FEEDBACK_VALUE_THUMBS_UP: FeedbackValue
FEEDBACK_VALUE_THUMBS_DOWN: FeedbackValue

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "response_id", "trace_id", "feedback", "time", "reason_code", "comment", "session_id", "prompt_version", "release_bundle")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RELEASE_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    response_id: str
    trace_id: str
    feedback: FeedbackValue
    time: _timestamp_pb2.Timestamp
    reason_code: str
    comment: str
    session_id: str
    prompt_version: str
    release_bundle: str
    def __init__(self, event_id: _Optional[str] = ..., response_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., feedback: _Optional[_Union[FeedbackValue, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason_code: _Optional[str] = ..., comment: _Optional[str] = ..., session_id: _Optional[str] = ..., prompt_version: _Optional[str] = ..., release_bundle: _Optional[str] = ...) -> None: ...
