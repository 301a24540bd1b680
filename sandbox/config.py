"""Every knob of the sandbox: start-up settings and the runtime flags ``/admin/settings`` may change."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sandbox.fhir.capability_variants import CapabilityVariant

SMART_FIELDS = (
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "grant_types_supported",
    "scopes_supported",
    "response_types_supported",
    "capabilities",
    "code_challenge_methods_supported",
    "revocation_endpoint",
    "introspection_endpoint",
    "management_endpoint",
)

AssertionAlg = Literal["RS384", "ES384"]
_ASSERTION_ALGS: tuple[AssertionAlg, ...] = ("RS384", "ES384")

#: Fields fixed at start-up: changing them at runtime would invalidate generated data or the socket.
STARTUP_ONLY = frozenset({"patients", "seed", "host", "port", "data_dir"})


class SandboxConfig(BaseModel):
    """Sandbox settings; every knob has a default so ``SandboxConfig()`` is a working 25-patient EHR."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    patients: int = Field(default=25, ge=1, le=10_000)
    seed: int = 7
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    data_dir: Path | None = None  # bulk files; a temporary folder when None

    # discovery
    #: v1: CapabilityStatement only, well-known answers 404 (SAL-04); v1_well_known: a SMART 1.0 server, the
    #: CapabilityStatement and a 1.0-shaped well-known file (sandbox.fhir.smart_v1_document); both refuse v2 scopes
    profile: Literal["v2", "v1", "v1_well_known"] = "v2"
    drop_smart_fields: list[str] = Field(default_factory=list)  # SAL-02 / SAL-03 legacy profile
    #: SAL-02: fields the smart-configuration writes as "" (a templated file leaving what is not set up blank)
    blank_smart_fields: list[str] = Field(default_factory=list)
    #: SAL-02/04: fields the smart-configuration writes as null, after the profile shaped it (a server serialising
    #: its whole configuration object, the fields it does not set included)
    null_smart_fields: list[str] = Field(default_factory=list)
    smart_issuer: str | None = None  # SAL-41 fault: smart-configuration names this issuer, not the FHIR base
    #: SAL-33: False answers 404 at the OpenID configuration: the JWKS is named only in the smart-configuration
    openid_configuration: bool = True
    jwks_moved: bool = False  # SAL-33: the keys moved to /oauth/keys (both documents say so), /oauth/jwks is 404
    #: SAL-33: the JWKS also lists this many retired keys (the current key's material, kids ``retired-N``), as a
    #: server that never prunes its key set does
    jwks_extra_keys: int = Field(default=0, ge=0, le=100_000)
    write_enabled: bool = True  # create on DocumentReference/Binary
    conditional_create: bool = True  # DWB-31/32: advertise and honour If-None-Exist on create (Epic does not)
    provenance_create: bool = False  # DWB-82: advertise and accept Provenance create (with write_enabled)
    provenance_search: bool = False  # DWB-82: with provenance_create, advertise and answer Provenance?target=
    #: DWB-40: how the CapabilityStatement lays out ``rest`` (R4 allows several: client and server, or "behaviors
    #: under different configuration settings"): "one" server entry; "client_first" a ``mode: client`` entry before
    #: it; "read_only_after" a second server entry after it describing every type read and search only
    capability_rests: Literal["one", "client_first", "read_only_after"] = "one"
    #: the CapabilityStatement as other servers write theirs, after ``capability_rests`` (legal variants, and two
    #: illegal ones ehrsync must refuse by name): sandbox.fhir.capability_variants
    capability_variants: list[CapabilityVariant] = Field(default_factory=list)

    # OAuth
    auto_approve: bool = False
    access_token_lifetime_s: int = Field(default=3600, ge=1)
    code_lifetime_s: int = Field(default=60, ge=1, le=60)
    refresh_mode: Literal["rotate", "none", "reuse_detection"] = "rotate"
    refresh_token_lifetime_s: int | None = None  # None: refresh tokens never expire
    #: a new authorization of the same client and user (patient, fhirUser) answers the live refresh token issued
    #: before, in its grant (family), as some EHRs do on re-authorization; False issues a new one each time
    reissue_refresh_token: bool = False
    accept_client_secret_post: bool = False
    #: SAL-31/SAL-42: leeway on an assertion's ``exp``; 0 models a server holding ``exp <= now + 5 min`` strictly
    assertion_exp_leeway_s: float = Field(default=60.0, ge=0)
    #: SAL-29/SAL-05: the assertion algs advertised and accepted (["RS384"] models an RS384-only server, eCW)
    assertion_algs: list[AssertionAlg] = Field(default_factory=lambda: list(_ASSERTION_ALGS), min_length=1)
    fhir_context_strings: bool = False  # SAL-16: emit fhirContext as plain reference strings (2.0 style)
    grant_scope_subset: list[str] | None = None  # SAL-21: grant only requested scopes that are in this list
    answer_v1_scopes: bool = False  # SAL-21: answer `scope` in v1 syntax
    #: SAL-15: fields left out of every token answer, as real servers do: no `patient` (a server that keeps the
    #: launch context to itself, or never sends it on a refresh), no `scope` (RFC 6749: "as requested"), ...
    token_response_omit: list[str] = Field(default_factory=list)
    need_patient_banner: bool = True
    smart_style_url: str | None = None

    # FHIR REST
    default_count: int = Field(default=50, ge=1)
    max_count: int = Field(default=1000, ge=1)
    ignore_sort: bool = False  # BDX-33: pretend `_sort` is unsupported
    #: DWB-33: search parameters this server does not support and ignores like unknown ones (e.g. ["identifier"])
    ignored_search_params: list[str] = Field(default_factory=list)
    #: DWB-32: the DocumentReference search parameters declared (and applied) beyond the common ones; [] models a
    #: server without them (ehrsync then cannot reconcile a note by patient, type and date)
    document_search_params: list[str] = Field(default_factory=lambda: ["type", "date", "encounter"])
    #: DWB-33: top-level elements a create drops silently before storing, as Oracle Health ignores unsupported create
    #: fields (draft-note §3 DWB-33, §7 "unknown fields ignored" [doc]), e.g. ["identifier"]
    create_drops_fields: list[str] = Field(default_factory=list)
    #: search parameters refused with 400 ``not-supported`` although advertised, as Oracle Health refuses
    #: ``_lastUpdated`` on resources without it (vendors.md §3), e.g. ["_lastUpdated"]
    refused_search_params: list[str] = Field(default_factory=list)
    #: per type, the parameter sets one of which every search of it must carry (a search by ``_id`` excepted), else
    #: 400 ``required``: Epic's Observation needs patient with category or code, Oracle Health's CarePlan patient with
    #: category (vendors.md §2, §3), e.g. {"CarePlan": [["patient", "category"]]}
    required_search_params: dict[str, list[list[str]]] = Field(default_factory=dict)
    #: how a search says it ignored parameters: not at all, a self link naming only the parameters it applied
    #: (FHIR's rule), or also a warning OperationOutcome entry (``search.mode=outcome``)
    report_ignored_params: Literal["silent", "self_link", "outcome"] = "silent"
    #: DWB-31/33: ``If-None-Exist`` ignores ``ignored_search_params`` too (Spark, its issue #520): a condition on
    #: ``identifier`` alone then matches every resource the token may see (200 with one, 412 with several)
    if_none_exist_ignores_params: bool = False
    #: DWB-50: how a DocumentReference create is answered (sandbox.fhir.create_answers): "direct" 201/200; "async"
    #: 202 + Content-Location of a status endpoint (FHIR async pattern); "accepted" a bare 202; "see_other"/"found"
    #: 303/302 + Location of the result; "temporary_redirect"/"permanent_redirect" 307/308, nothing processed
    create_answer: Literal[
        "direct", "async", "accepted", "see_other", "found", "temporary_redirect", "permanent_redirect"
    ] = "direct"
    #: "async"/"accepted": the note is stored this long (sandbox clock) after the POST; "async": the status endpoint
    #: answers 202 until then, and the job ends refused (422 in its batch-response entry) with create_async_rejects
    create_async_delay_s: float = Field(default=0.0, ge=0)
    create_async_rejects: bool = False
    #: the types whose creates get ``create_answer`` (a Binary created before its note, DWB-18, too)
    create_answer_types: list[str] = Field(default_factory=lambda: ["DocumentReference"])
    #: "async": how its status endpoint answers. "batch" 202 then a batch-response (FHIR); "lost" 404 for every job
    #: (a poll reaching a node that does not know the job, a status URL that expired); "outcome" 200 with an
    #: informational OperationOutcome while the job runs, instead of 202 (names no outcome of the create); "moved"
    #: 307 to the job's status on another node; "gateway" 400 with an HTML page (a proxy refusing the poll);
    #: "unnamed"/"collection" as "batch", but the done job's 201 names no id (no location, or only the type's
    #: collection; no resource), the resource stored all the same
    create_async_status: Literal["batch", "lost", "outcome", "moved", "gateway", "unnamed", "collection"] = "batch"
    #: "async": the Retry-After of the status endpoint's answer while the job runs, verbatim: "0" (poll again at
    #: once, as some servers say), an HTTP-date, or "" for none
    create_async_retry_after: str = "1"
    #: redirects' Location on this origin instead of the sandbox's own (another host: never followed with the token)
    create_redirect_origin: str | None = None
    create_bare_answer: bool = False  # DWB-33/50: a 2xx create answers with neither Location nor body
    #: DWB-50: a 2xx create answers as some servers do: a Location without /_history, no body; the version
    #: only in its ETag
    create_unversioned_location: bool = False
    #: DWB-50: appended to a 2xx create's Location path, e.g. ";jsessionid=1A2B" (RFC 3986 §3.3 segment parameters,
    #: as Java servlet containers rewrite URLs), or "/" (a Location ending in a slash after the id)
    create_location_params: str = ""
    #: DWB-50: a 2xx create's Location names the type's collection, [base]/[type], no id; the body as asked
    create_collection_location: bool = False
    #: DWB-50: a 2xx create answers as a server keeping no versions behind a framework hashing each answer's body
    #: into its ETag (Rack::ETag): a Location without /_history, the resource without meta, ETag W/"<MD5 of the body>"
    create_hashed_etag: bool = False
    #: DWB-50: a 2xx create keeps its Location but its body is a gateway's HTML page, not JSON (what it says is 2xx)
    create_html_body: bool = False
    #: prepended to every id the sandbox assigns on create (e.g. 70 characters: a server naming ids FHIR does not
    #: allow, ``[A-Za-z0-9-.]{1,64}``); "" assigns FHIR ids
    created_id_prefix: str = ""
    #: resources are served (read, search, bulk output) without ``meta.lastUpdated``, optional in FHIR and left out
    #: by some servers; the server still keeps it, so ``_lastUpdated`` searches and ``_since`` work as before
    omit_last_updated: bool = False
    page_link_ttl_s: float = Field(default=600.0, gt=0)
    clock_shift_s: float = 0.0
    #: server-clock stamps (changes' ``meta.lastUpdated``, searchset ``meta.lastUpdated``, ``transactionTime``,
    #: deletion times) are the leap second ending the minute before now, ``hh:mm:60.fffZ`` (FHIR allows second 60)
    clock_leap_second: bool = False
    writer_interval_s: float = Field(default=0.0, ge=0)  # BDX-33: background writer (0 = off)

    # Bulk Data
    strict_respond_async: bool = True  # BDX-02: 400 when `Prefer: respond-async` is missing
    requires_access_token: bool = True  # BDX-16
    bulk_lines_per_file: int = Field(default=50_000, ge=1)
    bulk_max_jobs_per_client: int = Field(default=2, ge=1)  # BDX-07
    bulk_retry_after_s: int = Field(default=1, ge=0)
    # BDX-07: False: a kick-off refused for a running export says no Retry-After (Oracle Health documents only the
    # 429 `throttled`, one running export per client and tenant)
    bulk_busy_retry_after: bool = True
    bulk_retry_after_http_date: bool = False  # BDX-10: send Retry-After as an HTTP-date instead of seconds
    bulk_status_retry_after: str | None = None  # BDX-10 faults: verbatim Retry-After on 202 ("" = none)
    bulk_min_poll_interval_s: float = Field(default=0.0, ge=0)  # BDX-09: polling faster than this gets 429
    bulk_file_ttl_s: float = Field(default=3600.0, gt=0)  # BDX-19
    # BDX-19: how an expired file answers; 401/403 are what a storage host's signed URL answers once past its expiry
    bulk_expired_status: Literal[401, 403, 404, 410] = 410
    bulk_manifest_page_size: int | None = Field(default=None, ge=1)  # output files per manifest page (link next)
    bulk_status_base: str | None = None  # kick-off's status URL on this origin (e.g. a job host), not the FHIR base's
    bulk_omit_count: bool = False  # BDX-13 flag
    # file URLs signed in their query like a storage host's (S3 ``X-Amz-Signature``): a credential to keep out of logs
    bulk_signed_file_urls: bool = False
    #: appended to every file URL's last segment, e.g. ";jsessionid=1A2B" (RFC 3986 §3.3 segment parameters, as Java
    #: servlet containers rewrite URLs): a session credential to keep out of logs; the file route ignores it
    bulk_file_url_params: str = ""
    # how the manifest names its files: absolute URLs, or `/bulk/files/...` / relative to the manifest page's URL
    bulk_file_url_form: Literal["absolute", "path", "relative"] = "absolute"
    bulk_gzip: bool = False  # BDX-17: gzip file downloads for clients sending Accept-Encoding: gzip
    bulk_file_bom: bool = False  # every file served starts with a UTF-8 byte order mark (a .NET writer's default)
    bulk_manifest_bom: bool = False  # every manifest page starts with a UTF-8 BOM, served text/plain (.NET defaults)
    bulk_throttle_s: float = Field(default=0.0, ge=0)  # artificial delay per patient, to observe in-progress states
    # kick-off parameters refused with 400 (Oracle Health's Bulk: the experimental `_elements` and `patient`)
    bulk_unsupported_params: tuple[str, ...] = ()

    def ignored_params(self, resource_type: str) -> set[str]:
        """The parameters a search of ``resource_type`` ignores: ``ignored_search_params``, and DocumentReference's
        own (type, date, encounter) on every other type, and on it those not in ``document_search_params``."""
        own = self.document_search_params if resource_type == "DocumentReference" else ()
        return {*self.ignored_search_params, *({"type", "date", "encounter"} - set(own))}
