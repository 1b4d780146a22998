"""jaxviz.atlas: the recorded top-K are the true top-K, receptive-field boxes against a hand computation, every
link and image of the site resolves, an interrupted run resumes to the same bytes, two hosts make disjoint shares
of the same site, WebP pictures, ``jaxviz atlas`` end to end with a rerun that writes nothing, hostile layer names
stay inside the site folder and are escaped (Chromium opens the pages where it is installed)."""

import html.parser
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import jax
import numpy as np
import pytest
from PIL import Image
from test_hostile_files import _conv, _functional, _input, _keras_zip, _layer

import jaxviz
from jaxviz import graph as G
from jaxviz.atlas import Field, field_box, receptive_fields
from jaxviz.atlas.dataset import _load
from jaxviz.atlas.site import _site_stems
from jaxviz.cli import main
from jaxviz.demo.scenes import make_scenes
from jaxviz.images import save_png

LAYERS = ("block1_conv1", "block2_conv2")
# Few units, few steps: the patterns' own tests check the ascent; here they only have to be written.
OPTIONS = dict(layers=LAYERS, units=[0, 1, 2, 3], top=3, steps={"keras": 2, "regularised": 2}, chunk=2)


def _atlas():
    return jaxviz.atlas  # the function (the module jaxviz.atlas is imported from directly above)


@pytest.fixture(scope="module")
def demo():
    return jaxviz.load("vgg_demo")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Seven demo scenes, one in a subfolder and one at 80×96 (resized to the model's 64×64 for the pass)."""
    d = tmp_path_factory.mktemp("scenes")
    images, _, _ = make_scenes(7, 64, seed=3)
    for i, im in enumerate(images[:5]):
        save_png(d / f"scene{i}.png", im)
    save_png(d / "sub" / "scene5.png", images[5])
    save_png(d / "wide.png", np.asarray(Image.fromarray(images[6]).resize((96, 80), Image.BILINEAR)))
    return d


@pytest.fixture(scope="module")
def site(demo, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "atlas"
    manifest = _atlas()(demo, folder, out=out, progress=False, **OPTIONS)
    return out, manifest


def test_the_recorded_top_k_is_the_true_top_k(demo, folder, site):
    _, manifest = site
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert len(files) == 7 and manifest["image_count"] == 7
    feats = {}
    for f in files:  # image by image, with model.features
        x, _ = _load(folder / f, demo.input_hw, 3)
        out = demo.features(demo.preprocess_input(x[None]), LAYERS)
        feats[f] = {n: np.asarray(v[0]) for n, v in out.items()}
    for layer in manifest["layers"]:
        name = layer["name"]
        for unit in layer["units"]:
            u = unit["index"]
            peaks = np.array([feats[f][name][..., u].max() for f in files])
            tol = 1e-4 * max(np.abs(peaks).max(), 1e-6)  # batched vs one image: rounding only
            true_top = np.sort(peaks)[::-1][:3]
            got = np.array([t["activation"] for t in unit["top"]])
            assert len(got) == 3
            np.testing.assert_allclose(got, true_top, rtol=0, atol=tol)
            for t in unit["top"]:
                fmap = feats[t["image"]][name][..., u]
                assert abs(fmap.max() - t["activation"]) <= tol  # the image recorded has that maximum
                i, j = t["position"]
                assert abs(fmap[i, j] - fmap.max()) <= tol  # and it sits where recorded
            # statistics over the folder
            assert unit["mean"] == pytest.approx(peaks.mean(), abs=tol)
            active = np.mean([(feats[f][name][..., u] > 0).mean() for f in files])
            assert unit["active"] == pytest.approx(active, abs=1e-6)


def _vgg_like():
    conv = dict(kernel_size=3, padding="same", activation="relu")
    layers = [G.make_layer("input_layer", "InputLayer", {"batch_shape": [None, 16, 16, 3]}),
              G.make_layer("c1", "Conv2D", {**conv, "filters": 2}, ["input_layer"]),
              G.make_layer("c2", "Conv2D", {**conv, "filters": 2}, ["c1"]),
              G.make_layer("p1", "MaxPooling2D", {"pool_size": 2}, ["c2"]),
              G.make_layer("c3", "Conv2D", {**conv, "filters": 2}, ["p1"]),
              G.make_layer("p2", "MaxPooling2D", {"pool_size": 2}, ["c3"]),
              G.make_layer("c4", "Conv2D", {"kernel_size": 3, "padding": "valid", "strides": 2, "filters": 2,
                                            "dilation_rate": 1}, ["p2"])]
    return G.Graph("vgg_like", tuple(layers), ("c4",))


def test_receptive_field_by_hand():
    f = receptive_fields(_vgg_like(), (16, 16))
    # By hand, one axis: c1 (3×3 same, pad 1) sees [i-1, i+1]; c2 [i-2, i+2]; p1 (2×2 stride 2): pixel i covers
    # c2's 2i and 2i+1, so [2i-2, 2i+3]; c3 (pad 1, jump 2): [2i-4, 2i+5]; p2: [4i-4, 4i+7] (12 px, as a
    # VGG block after two convs and one conv); c4 (3×3 valid, stride 2, jump 4): [8i-4, 8i+15].
    assert f["c1"][0] == Field(1, -1, 1)
    assert f["c2"][0] == Field(1, -2, 2)
    assert f["p1"][0] == Field(2, -2, 3)
    assert f["c3"][0] == Field(2, -4, 5)
    assert f["p2"][1] == Field(4, -4, 7)
    assert f["c4"][0] == Field(8, -4, 15)
    # clipped to the 16×16 input at the border; scaled to a 32×48 source image (×2 rows, ×3 columns)
    assert field_box(f["p2"], (0, 1), (16, 16)) == [0, 0, 7, 11]
    assert field_box(f["p2"], (0, 1), (16, 16), (32, 48)) == [0, 0, 15, 35]
    assert field_box(f["c4"], (0, 0), (16, 16)) == [0, 0, 15, 15]


def test_receptive_field_holds_every_pixel_the_unit_depends_on():
    # The input gradient of one unit at one position is zero outside its box (exact ops: the fast ones' Winograd
    # tiles would leave rounding-level values beside it; ReLUs replaced by the identity so none blocks it).
    demo = jaxviz.load("vgg_demo", ops="exact")
    f = receptive_fields(demo.graph, demo.input_hw, ["block2_conv2"])["block2_conv2"]
    x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3)) * 50

    def unit(x):
        return demo.apply(demo.params, x, upto="block2_conv2", relu=lambda v: v)[0][0, 13, 20, 1]

    g = np.abs(np.asarray(jax.grad(unit)(x)[0])).sum(-1)
    ys, xs = np.nonzero(g)
    y0, x0, y1, x1 = field_box(f, (13, 20), (64, 64))
    assert len(ys) > 0 and (y1 - y0, x1 - x0) == (13, 13)  # VGG's block2_conv2 sees 14 px
    assert y0 <= ys.min() and ys.max() <= y1 and x0 <= xs.min() and xs.max() <= x1


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "href" in a:
            self.refs.append(("a", a["href"]))
        if tag == "img":
            self.refs.append(("img", a["src"]))


def _check_links(root: Path) -> dict:
    """Every link and image of every page exists inside ``root``; returns ``{page: refs}``."""
    pages = {}
    for page in sorted(p for p in root.rglob("*.html") if p.is_file()):
        parser = _Links()
        parser.feed(page.read_text("utf-8"))
        for _, ref in parser.refs:
            target = (page.parent / ref).resolve()
            assert target.is_file(), f"{page.relative_to(root)}: {ref}"
            assert target.is_relative_to(root.resolve())
        pages[page.relative_to(root).as_posix()] = parser.refs
    return pages


def test_every_link_and_image_resolves(site, folder):
    root, manifest = site
    pages = _check_links(root)
    assert set(pages) == {"index.html", *(f"{n}/index.html" for n in LAYERS),
                          *(f"{n}/{u}.html" for n in LAYERS for u in range(4))}
    assert not (root / ".atlas").exists()  # the run's state is gone once the site is complete
    unit1 = [r for kind, r in pages["block1_conv1/1.html"] if kind == "a"]
    assert "0.html" in unit1 and "2.html" in unit1 and "index.html" in unit1  # previous, next, layer
    assert not any(r == "4.html" for _, r in pages["block1_conv1/3.html"])  # the last unit has no next
    imgs = [r for kind, r in pages["block1_conv1/0.html"] if kind == "img"]
    assert len(imgs) == 3 + 2 * 3  # two patterns and the kernel, a crop and a thumbnail per top image
    assert not any("kernel" in r for _, r in pages["block2_conv2/0.html"])  # kernels for the first layer only
    on_disk = json.loads((root / "atlas.json").read_text())
    assert on_disk == json.loads(json.dumps({k: v for k, v in manifest.items() if k != "run"}))
    assert manifest["run"] == {"computed": 8, "reused": 0, "pending": 0, "up_to_date": False}
    for layer in on_disk["layers"]:
        for unit in layer["units"]:
            assert set(unit["images"]) >= {"regularised", "keras"}
            for t in unit["top"]:
                h, w = Image.open(folder / t["image"]).size[::-1]
                y0, x0, y1, x1 = t["box"]
                assert 0 <= y0 <= y1 < h and 0 <= x0 <= x1 < w
                if t["image"] == "wide.png":  # 80×96 source: the 64 px box scaled by 1.25 and 1.5
                    assert (h, w) == (80, 96)
    crop = Image.open(root / on_disk["layers"][1]["units"][0]["top"][0]["crop"])
    assert max(crop.size) == 64
    layer_page = (root / "block2_conv2" / "index.html").read_text()
    assert "data-mean=" in layer_page and "sort" in layer_page


def test_pages_open_in_a_browser(site):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("no Chromium found; install it with: apt-get install chromium")
    root, _ = site
    for page in ("index.html", "block1_conv1/index.html", "block1_conv1/0.html"):
        res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                              "--virtual-time-budget=3000", "--dump-dom", (root / page).as_uri()],
                             capture_output=True, text=True, timeout=90)
        assert res.returncode == 0 and "<h1>" in res.stdout
        assert [line for line in res.stderr.splitlines() if ":CONSOLE" in line] == []


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_interrupted_run_resumes_to_the_same_files(demo, folder, site, tmp_path, monkeypatch):
    full, _ = site
    out = tmp_path / "atlas"

    class Stop(Exception):
        pass

    def stop(event):
        raise Stop(event)

    with pytest.raises(Stop):
        _atlas()(demo, folder, out=out, progress=stop, **OPTIONS)
    assert not (out / "atlas.json").exists() and len(list((out / ".atlas").glob("*.json"))) >= 1
    from jaxviz.visualize import patterns

    calls = []
    real = patterns.filter_patterns
    monkeypatch.setattr(patterns, "filter_patterns", lambda *a, **k: calls.append((a[1], a[2])) or real(*a, **k))
    _atlas()(demo, folder, out=out, progress=False, **OPTIONS)
    # the first chunk is not redone: 3 chunks left, 2 methods each
    assert ("block1_conv1", [0, 1]) not in calls and len(calls) == 2 * 3
    assert _files(out) == _files(full)


def test_hostile_layer_names_stay_inside_the_site(tmp_path):
    # A Keras 3 file (written as Keras writes it, without Keras) whose conv layers are named like markup and
    # like a path; "/" is refused at load, so these are what a file can do.
    bad, dots = "<img src=x onerror=alert(1)>", "..x"
    rng = np.random.default_rng(0)
    config = _functional([_input(), _conv(bad, "input_layer"), _conv(dots, bad), _layer("GlobalAveragePooling2D",
                          "gap", [dots]), _layer("Dense", "dense", ["gap"], units=2, activation="softmax")],
                         ["input_layer"], ["dense"])
    weights = {"conv2d": [rng.normal(size=(3, 3, 3, 2)).astype("f4"), np.zeros(2, "f4")],
               "conv2d_1": [rng.normal(size=(3, 3, 2, 2)).astype("f4"), np.zeros(2, "f4")],
               "dense": [rng.normal(size=(2, 2)).astype("f4"), np.zeros(2, "f4")]}
    model = jaxviz.load(_keras_zip(tmp_path / "m.keras", config, weights))
    images = tmp_path / "images"
    for i, im in enumerate(make_scenes(2, 16, seed=1)[0]):
        save_png(images / f"{i}.png", im)
    site = tmp_path / "deep" / "site"
    manifest = _atlas()(model, images, out=site, top=1, progress=False, steps={"keras": 1, "regularised": 1},
                        size=8)
    # a site inside the image folder: a rerun does not take the site's own pictures for data
    assert _atlas()(model, images, out=images / "site", top=1, progress=False,
                    steps={"keras": 1, "regularised": 1}, size=8)["image_count"] == 2
    again = _atlas()(model, images, out=images / "site", top=1, progress=False,
                     steps={"keras": 1, "regularised": 1}, size=8)
    assert again["image_count"] == 2 and {t["image"] for u in again["layers"][0]["units"] for t in u["top"]} <= {
        "0.png", "1.png"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "images", "m.keras"]
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["site"]
    assert sorted(p.name for p in site.iterdir() if p.is_dir()) == ["_img_src=x_onerror=alert_1_", "x"]
    assert [layer["name"] for layer in manifest["layers"]] == [bad, dots]
    _check_links(site)
    for page in (p for p in site.rglob("*.html") if p.is_file()):
        text = page.read_text()
        assert "<img src=x" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in (site / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in (site / "_img_src=x_onerror=alert_1_" / "0.html").read_text()


def test_a_layer_folder_never_takes_the_name_of_a_site_file():
    stems = _site_stems(["input_layer", "index.html", "atlas.json", "Index.HTML", "layer_index.html"])
    assert stems["index.html"] == "index.html_2" and stems["atlas.json"] == "atlas.json_2"
    assert stems["Index.HTML"].lower() not in ("index.html", "index.html_2")
    assert len({s.lower() for s in stems.values()}) == 5  # all distinct, as a case-blind file system sees them


def test_the_figures_index_links_the_atlases_inside_and_beside_it(tmp_path):
    from jaxviz.figures import page

    out = tmp_path / "figs"
    for folder, model in ((out / "atlas", "vgg_demo"), (tmp_path / "my atlas", "<m>"), (tmp_path / "empty", None)):
        folder.mkdir(parents=True)
        if model is not None:
            (folder / "atlas.json").write_text(json.dumps({"model": model, "layers": []}))
            (folder / "index.html").write_text("<!doctype html>")
    manifest = {"arch": "vgg_demo", "weights": "demo", "versions": {}, "image": "x.png"}
    page._write_index(out, manifest, [])
    text = (out / "index.html").read_text()
    assert '<a href="atlas/index.html">' in text and '<a href="../my%20atlas/index.html">' in text
    assert "empty" not in text and "&lt;m&gt;" in text
    for href in ("atlas/index.html", "../my%20atlas/index.html"):
        assert (out / unquote(href)).resolve().is_file()


def test_diversity_lowers_the_similarity_of_a_batch(demo, folder, site, tmp_path):
    from jaxviz.visualize.patterns import diverse_patterns, gram_similarity

    sims = {}
    for weight in (0.0, 1.0):  # the same starts, with and without the penalty
        x = diverse_patterns(demo, "block2_conv2", 3, n=3, weight=weight, size=64, steps=24)
        sims[weight] = float(gram_similarity(demo.features(x, "block2_conv2")["block2_conv2"]))
    # measured (CPU): 0.994 without, 0.731 with; the margin leaves room for other platforms' rounding
    assert sims[1.0] < sims[0.0] - 0.1, sims
    # in the atlas (the same programs as the site fixture's and the lines above): the unit's page shows them
    manifest = _atlas()(demo, folder, out=tmp_path / "site", **{**OPTIONS, "layers": ["block2_conv2"],
                                                                 "units": [2, 3]},
                        diversity=3, progress=False)
    diverse = manifest["layers"][0]["units"][1]["images"]["diverse"]
    assert len(diverse) == 3 and all((tmp_path / "site" / d).is_file() for d in diverse)
    pages = _check_links(tmp_path / "site")
    assert sum("_diverse" in ref for _, ref in pages["block2_conv2/3.html"]) == 3


def test_two_hosts_make_disjoint_shares_of_the_same_site(demo, folder, site, tmp_path, monkeypatch):
    from jaxviz.visualize import patterns

    full, _ = site
    out = tmp_path / "atlas"  # one folder both hosts see
    calls = []
    real = patterns.filter_patterns
    monkeypatch.setattr(patterns, "filter_patterns", lambda *a, **k: calls.append((a[1], tuple(a[2]))) or real(*a, **k))
    first = _atlas()(demo, folder, out=out, progress=False, host=(0, 2), **OPTIONS)
    # 4 chunks of 2 units (2 layers × 4 units): host 0 makes chunks 0 and 2, and leaves the site unwritten
    assert first["run"] == {"computed": 4, "reused": 0, "pending": 4, "up_to_date": False}
    assert first["layers"] == [] and not (out / "atlas.json").exists() and not (out / "index.html").exists()
    host0 = set(calls)
    calls.clear()
    second = _atlas()(demo, folder, out=out, progress=False, host=(1, 2), **OPTIONS)
    host1 = set(calls)
    assert host0 == {("block1_conv1", (0, 1)), ("block2_conv2", (0, 1))}
    assert host1 == {("block1_conv1", (2, 3)), ("block2_conv2", (2, 3))}
    # host 1 finds host 0's chunks done and writes the site: the bytes of one host's run
    assert second["run"] == {"computed": 4, "reused": 4, "pending": 0, "up_to_date": False}
    assert _files(out) == _files(full)
    with pytest.raises(jaxviz.JaxvizError, match="host 2 of 2"):
        _atlas()(demo, folder, out=tmp_path / "bad", progress=False, host=(2, 2), **OPTIONS)


def test_webp_pictures(demo, folder, site, tmp_path):
    out = tmp_path / "webp"
    manifest = _atlas()(demo, folder, out=out, progress=False, image_format="webp",
                        **{**OPTIONS, "layers": ["block1_conv1"], "units": [0, 1]})
    pictures = sorted((out / "block1_conv1" / "img").iterdir())
    assert len(pictures) == 2 * (3 + 2 * 3)  # patterns, kernel, a crop and a thumbnail per top image
    for p in pictures:
        head = p.read_bytes()[:12]
        assert p.suffix == ".webp" and head[:4] == b"RIFF" and head[8:] == b"WEBP", p
        assert Image.open(p).format == "WEBP"
    pages = _check_links(out)
    refs = [r for _, r in pages["block1_conv1/0.html"] if _ == "img"] + [
        r for kind, r in pages["block1_conv1/index.html"] if kind == "img"]
    assert refs and all(r.endswith(".webp") for r in refs)
    assert manifest["image_format"] == "webp"
    assert manifest["layers"][0]["units"][0]["top"][0]["thumb"].endswith(".webp")
    with pytest.raises(jaxviz.JaxvizError, match="png, webp"):
        _atlas()(demo, folder, out=tmp_path / "gif", image_format="gif", **OPTIONS)


def test_the_atlas_command_makes_a_site_and_a_rerun_writes_nothing(folder, tmp_path, capsys):
    out = tmp_path / "site"
    argv = ["atlas", "--arch", "vgg_demo", "--images", str(folder), "--layers", "block1_conv1", "--units", "0:4",
            "--top", "3", "--quick", "--no-progress", "-o", str(out)]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "4 units of 1 layers over 7 images" in said
    manifest = json.loads((out / "atlas.json").read_text())
    assert [u["index"] for u in manifest["layers"][0]["units"]] == [0, 1, 2, 3]
    assert manifest["steps"] == {"keras": 10, "regularised": 32} and manifest["top"] == 3
    assert {"index.html", "block1_conv1/index.html", *(f"block1_conv1/{u}.html" for u in range(4))} <= set(
        _check_links(out))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "up to date" in said and "nothing written" in said
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()} == before
    # the host split on the command line: the 4 units are one chunk, host 0's; host 1 of 2 leaves it to host 0
    assert main([*argv[:-1], str(tmp_path / "split"), "--host", "1/2"]) == 0
    assert "0 units made, 0 found done, 4 left to other hosts" in capsys.readouterr().out
    assert not (tmp_path / "split" / "index.html").exists()
    assert main([*argv, "--host", "2/2"]) != 0
    assert "argument --host: '2/2': give I/N with 0 <= I < N" in capsys.readouterr().err
