"""The Pretrain page's settings form is generated from PretrainConfig's declaration: adding a field to the
declaration adds it to the form, with the declared range, default, help and label."""

import dataclasses

import pytest

from sslstudio.engine.pretrain import PretrainConfig
from sslstudio.errors import ConfigError
from sslstudio.gui.config_form import ConfigForm
from sslstudio.settings import check_value, declared, label_of, param, spin_range


def _form_fields(config_cls):
    return [f for f in dataclasses.fields(config_cls)
            if f.default is not dataclasses.MISSING and f.metadata.get("form", True)]


def _value(w):
    for getter in ("currentData", "isChecked", "value", "text"):
        if hasattr(w, getter):
            return getattr(w, getter)()


@pytest.fixture
def page(window):
    return window.pretrain_page


def test_every_declared_form_field_has_a_widget_as_declared(page):
    from sslstudio.tasks import get_task

    optim = get_task(page.window_.task_page.task_name()).optim
    fields = _form_fields(PretrainConfig)
    assert page.form.names() == [f.name for f in fields]
    assert {"epochs", "lr", "schedule", "holdout", "compile", "monitor_labelled"} <= set(page.form.names())
    assert not {"task", "data", "out", "resume", "task_options", "cache_dir"} & set(page.form.names())
    for f in fields:
        w = page.form.widget(f.name)
        assert w.toolTip() == f.metadata["help"], f.name
        if hasattr(w, "minimum"):  # a spin box: the declared range (exclusive bounds one step in)
            decimals = w.decimals() if hasattr(w, "decimals") else 0
            assert (w.minimum(), w.maximum()) == spin_range(PretrainConfig, f.name, decimals), f.name
        if f.default is not None:
            assert _value(w) == f.default, f.name
        elif hasattr(optim, f.name):  # "the paper's": the selected task's recipe
            assert _value(w) == pytest.approx(getattr(optim, f.name)), f.name
        else:  # an optional setting left empty
            assert page.form.all_values()[f.name] is None, f.name
    labels = {page.form.layout().itemAt(i, page.form.layout().ItemRole.LabelRole).widget().text()
              for i in range(page.form.layout().rowCount())}
    assert labels == {label_of(f) for f in fields}
    assert {"Learning rate", "Backbone", "Loader workers"} <= labels and "Lr" not in labels


def test_the_task_fills_the_papers_settings(page):
    from sslstudio.tasks import get_task

    for name in ("rotation", "jigsaw"):
        page.set_task_defaults(name)
        optim = get_task(name).optim
        assert (page.epochs.value(), page.batch_size.value()) == (optim.epochs, optim.batch_size)
        assert page.lr.value() == pytest.approx(optim.lr)


def test_a_new_declared_field_appears_in_the_form(qtbot):
    @dataclasses.dataclass
    class Run:
        path: str
        rate: float = param(0.25, "A rate.", min=0.0, min_exclusive=True, max=1.0, label="Rate of things",
                            decimals=2, unit="x")
        hidden: int = param(3, "Not in the form.", min=1, form=False)
        steps: int | None = param(None, "Steps.", min=1, max=50)

    form = ConfigForm(Run)
    qtbot.addWidget(form)
    assert form.names() == ["rate", "steps"]
    rate = form.widget("rate")
    assert (rate.minimum(), rate.maximum(), rate.value(), rate.suffix()) == (0.01, 1.0, 0.25, " x")
    assert form.all_values() == {"rate": 0.25, "steps": 1}


def test_an_out_of_range_value_is_refused_with_the_declarations_sentence(page, window, tiny_images, qtbot):
    with qtbot.waitSignal(window.data_page.scan_finished, timeout=10_000):
        window.data_page.set_folder(str(tiny_images))
    page.form.check()  # the defaults pass
    page.lr.setMinimum(0.0)  # a box wider than the declaration (or a value from elsewhere)
    page.lr.setValue(0.0)
    with pytest.raises(ConfigError) as refused:
        check_value("Learning rate", 0.0, declared(PretrainConfig, "lr"))
    sentence = str(refused.value)
    assert sentence == "Learning rate must be greater than 0 and at most 10; got 0."
    with pytest.raises(ConfigError, match="^Learning rate must be"):
        page.form.check()
    with qtbot.waitSignal(page.run_failed, timeout=5000) as blocker:
        page.start()
    assert blocker.args[0] == sentence and sentence in page.status.text()
    assert page.job is None and page.start_button.isEnabled()
    assert not (window.workspace / "runs").exists() or not any((window.workspace / "runs").iterdir())
    assert sentence in window.statusBar().currentMessage()


def test_the_form_marks_the_fields_the_user_changed(page, qtbot):
    from PySide6.QtCore import Qt

    form = page.form
    assert form.edited() == []
    form.set_values({"epochs": 12, "lr": 0.02})  # the program's: not the user's
    assert form.edited() == []
    page.batch_size.setFocus()
    page.batch_size.selectAll()
    qtbot.keyClicks(page.batch_size, "24")
    qtbot.keyClick(page.batch_size, Qt.Key.Key_Return)
    page.arch.setCurrentIndex(page.arch.findData("resnet18_small"))
    assert form.edited() == ["arch", "batch_size"] and form.is_edited("batch_size")
    form.set_values({"batch_size": 32})  # set again by the program: follows it again
    assert form.edited() == ["arch"]
    form.set_values({"epochs": 5}, edited=True)
    assert form.edited() == ["arch", "epochs"]
    form.set_edited(["lr", "not_a_field"])
    assert form.edited() == ["lr"]


def test_words_and_special_values_come_from_the_declaration(qtbot):
    from sslstudio.tasks.deepcluster import DeepClusterConfig
    from sslstudio.tasks.exemplar import ExemplarConfig

    form = ConfigForm(DeepClusterConfig)
    qtbot.addWidget(form)
    clusters = form.widget("clusters")
    assert clusters.value() == 0 and clusters.text() == "auto"  # 0 clusters: one per 128 images
    clusters.setValue(12)
    assert clusters.text() == "12"
    from PySide6.QtWidgets import QLabel

    shown = {lab.text() for lab in form.findChildren(QLabel)}
    assert "PCA dimensions" in shown and "Pca dim" not in shown
    exemplar = ConfigForm(ExemplarConfig)
    qtbot.addWidget(exemplar)
    assert exemplar.widget("rotation").suffix() == " °" and exemplar.widget("min_patch").suffix() == " px"
