"""Release rights against a real basic-auth ``mlflow server`` (issue 19 item 7, spec §15).

One module-scoped server. The registry is bootstrapped *before* the server starts, embedded, into
the server's own SQLite file (over basic-auth every request costs ~0.4 s of password checking);
candidate bundle 2 (a new faq prompt version, offline evaluation passed) is made there too.
Everything after that goes through the server, as users of four kinds: the admin, a release
owner, a prompt owner and a plain viewer (the server's ``default_permission = READ``).
``mangaassist-release`` runs in-process, with each user's credentials in the environment.

The tests run in file order: the refusals first, then the promotion those refusals held back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from orchestrator.config import load
from orchestrator.release import cli
from orchestrator.release.components import BUNDLE_MODEL
from orchestrator.release.lifecycle import signoff_key
from orchestrator.release.registry import ReleaseRegistry, tracking_uri_scope
from orchestrator.release.rights import admin_client
from tests.support import MlflowServer

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-password-rights-1"
PASSWORDS = {
    "rita": "rita-password-123",
    "pat": "pat-password-1234",
    "vic": "vic-password-1234",
    "gwy": "gateway-password-1",
}
EXPERIMENT = "rights-tests"


@dataclass
class World:
    server: MlflowServer
    workdir: Path
    candidate: int
    prompt_uri: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import mlflow
    import mlflow.genai

    workdir = tmp_path_factory.mktemp("rights")
    uri = f"sqlite:///{workdir / 'server.db'}"
    registry = ReleaseRegistry(uri, EXPERIMENT)
    registry.bootstrap(load({"MLFLOW_TRACKING_URI": uri}))
    with tracking_uri_scope(uri):
        prompt = mlflow.genai.register_prompt(
            name="ma-prompts.faq", template="Answer the FAQ in two sentences, from the context only."
        )
    bundle = registry.register("prod", {}, {"faq": str(prompt.uri)})
    c = MlflowClient(tracking_uri=uri)
    run_id = c.create_run(registry.ensure_experiment(EXPERIMENT)).info.run_id
    registry.set_bundle_tags(bundle, {"eval.offline": "passed", "eval.offline.run_id": run_id})
    server = MlflowServer(uri, workdir, admin_password=ADMIN_PASSWORD).start()
    try:
        yield World(server, workdir, bundle.version, str(prompt.uri))
    finally:
        server.stop()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def as_user(world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    monkeypatch.setenv("MANGAASSIST_RELEASE_EVENTS", "off")

    def run(user: str, *args: str, password: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or PASSWORDS.get(user, ADMIN_PASSWORD))
        capsys.readouterr()
        code = cli.run(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def test_the_admin_grants_each_role_on_its_own_resource(world: World, as_user: Run) -> None:
    for user, password in PASSWORDS.items():
        (world.workdir / f"{user}.pw").write_text(password + "\n")
    code, out, err = as_user(
        "admin", "grant", "--role", "release-owner", "--user", "rita", "--password-file", str(world.workdir / "rita.pw")
    )
    assert code == 0, err
    assert out.strip() == "user rita (created) is release-owner: registered_model:mangaassist-chatbot-prod=EDIT"
    code, out, err = as_user(
        "admin",
        "grant",
        "--role",
        "prompt-owner",
        "--user",
        "pat",
        "--password-file",
        str(world.workdir / "pat.pw"),
        "--json",
    )
    assert code == 0, err
    granted = json.loads(out)
    assert granted["created_user"] is True
    assert granted["granted"] == [
        f"prompt:ma-prompts.{route}=EDIT" for route in ("faq", "product_question", "recommendation", "return_policy")
    ]
    # granting again is idempotent (MLflow says RESOURCE_ALREADY_EXISTS; the grant is re-made as EDIT)
    code, out, err = as_user("admin", "grant", "--role", "release-owner", "--user", "rita")
    assert code == 0 and out.strip() == "user rita is release-owner: registered_model:mangaassist-chatbot-prod=EDIT"
    # the viewer: a user with no grant (the server's default READ)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        env.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        admin_client(world.server.url).create_user("vic", PASSWORDS["vic"])

    # the gateway: EDIT on the traffic experiment only, so it writes runs there and nothing in the registry
    code, out, err = as_user(
        "admin", "grant", "--role", "gateway", "--user", "gwy", "--password-file", str(world.workdir / "gwy.pw")
    )
    assert code == 0, err
    assert out.startswith(f"user gwy (created) is gateway: experiment:experiment {EXPERIMENT} (id ")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", "gwy")
        env.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS["gwy"])
        gateway = MlflowClient(tracking_uri=world.server.url)
        experiment = gateway.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None and gateway.create_run(experiment.experiment_id).info.run_id

    # only an admin may grant; a new user needs a password
    code, _, err = as_user("rita", "grant", "--role", "release-owner", "--user", "vic")
    assert code == 2 and "managing users and grants needs an MLflow admin" in last_line(err)
    code, _, err = as_user("admin", "grant", "--role", "guardrail-owner", "--user", "gina")
    assert code == 2 and last_line(err).endswith("user 'gina' does not exist: pass --password-file to create it")


def test_refusals_name_the_missing_right(world: World, as_user: Run) -> None:
    v = str(world.candidate)
    # a release owner cannot promote a bundle whose gates fail: exit 1, every unmet gate on its own line
    code, out, err = as_user("rita", "promote", "--bundle", v)
    assert code == 1, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("UNMET")] == [
        "UNMET shadow",
        "UNMET canary",
        "UNMET prompt-signoff",
    ]
    # a viewer cannot sign a prompt: the 403 becomes one line naming the right and the grant
    code, _, err = as_user("vic", "sign-off", "--bundle", v, "--area", "prompt")
    assert code == 2 and "Traceback" not in err
    assert last_line(err) == (
        f"mangaassist-release: error: MLflow refused to sign {world.prompt_uri} (HTTP 403) for user 'vic': it needs "
        "EDIT on prompt ma-prompts.faq (its owners' right); "
        "grant it with: mangaassist-release grant --role prompt-owner --user vic"
    )
    # a release owner cannot forge a prompt sign-off: 403 on the prompt version tag
    code, _, err = as_user("rita", "sign-off", "--bundle", v, "--area", "prompt")
    assert code == 2 and "(HTTP 403) for user 'rita': it needs EDIT on prompt ma-prompts.faq" in err
    # a prompt owner can sign, and the stamp names the authenticated user
    code, out, err = as_user("pat", "sign-off", "--bundle", v, "--area", "prompt", "--json")
    assert code == 0, err
    [signed] = json.loads(out)
    assert signed["by"] == "pat" and signed["bundle"] == f"{BUNDLE_MODEL}/{v}"
    name, version = world.prompt_uri.removeprefix("prompts:/").split("/")
    tag = MlflowClient(tracking_uri=f"sqlite:///{world.workdir / 'server.db'}").get_prompt_version(name, version)
    assert json.loads(tag.tags[signoff_key("prompt", world.candidate)])["by"] == "pat"
    # ... but moves no alias and records no verdict
    code, _, err = as_user("pat", "record-verdict", "--bundle", v, "--stage", "shadow", "--verdict", "pass")
    assert code == 2 and "(HTTP 403) for user 'pat': it needs EDIT on registered model mangaassist-chatbot-prod" in err
    # a wrong password is 401, said as such
    code, _, err = as_user("rita", "stage", "--bundle", v, "--alias", "shadow", password="not-ritas-password")
    assert code == 2 and last_line(err) == (
        "mangaassist-release: error: MLflow did not accept the credentials of user 'rita' (HTTP 401): "
        "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    )


def test_only_a_release_owner_promotes_once_the_gates_pass_and_rollback_is_one_call(world: World, as_user: Run) -> None:
    v = str(world.candidate)
    assert as_user("rita", "stage", "--bundle", v, "--alias", "canary", "--percent", "10")[0] == 0
    for stage in ("shadow", "canary"):
        code, _, err = as_user("rita", "record-verdict", "--bundle", v, "--stage", stage, "--verdict", "pass")
        assert code == 0, err

    for user in ("vic", "pat"):  # every gate passes now, yet neither may move prod
        code, _, err = as_user(user, "promote", "--bundle", v)
        assert code == 2, err
        assert f"MLflow refused to move alias prod (HTTP 403) for user '{user}'" in last_line(err)
        assert "release-owner" in last_line(err)

    code, out, err = as_user("rita", "promote", "--bundle", v, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["promoted"] is True and result["previous"] == 1
    signoff = next(g for g in result["gates"] if g["gate"] == "prompt-signoff:faq")
    assert signoff["state"] == "passed" and signoff["evidence"]["by"] == "pat"

    code, out, err = as_user("rita", "rollback", "--reason", "thumbs-down alarm")
    assert code == 0, err
    assert out.strip() == f"prod is bundle 1 again (rolled back from {v})"
    c = MlflowClient(tracking_uri=f"sqlite:///{world.workdir / 'server.db'}")
    assert int(c.get_model_version_by_alias(BUNDLE_MODEL, "prod").version) == 1
    assert int(c.get_model_version_by_alias(BUNDLE_MODEL, "prod-previous").version) == 1
    assert json.loads(c.get_model_version(BUNDLE_MODEL, v).tags["rolled_back"])["by"] == "rita"
