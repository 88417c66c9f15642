"""The product table: the papers' predictor variables -> real collections, assets and decoding.

Each :class:`Product` says where a variable lives (a STAC collection and asset, by default on
Microsoft Planetary Computer), how to decode raw digital numbers (``value = DN * scale +
offset``), which DNs are fill values or outside the valid range, and which quality band and bit
rule keep only good-quality pixels. :func:`globalflux.io.rasters.decode` and
:func:`globalflux.io.rasters.mask_qc` apply these rules; the STAC loader uses them for every
asset it loads.

Scale factors, fill values and QC bit layouts follow the MODIS Collection 6.1 user guides:

* MOD11A2 (LST 8-day 1 km): Wan, Z. (2013) MODIS LST Products User's Guide (C6), table 7/17.
  LST = DN x 0.02 K; DN 0 = fill; QC bits 0-1 "mandatory QA": 00 = good quality.
* MOD09A1 (surface reflectance 8-day 500 m): Vermote et al. (2015) MOD09 User's Guide v1.4,
  table 13/16. Reflectance = DN x 1e-4; DN -28672 = fill; valid -100..16000.
  ``sur_refl_state_500m`` bits 0-1 cloud state (00 clear), bit 2 cloud shadow (0 no).
* MOD17A2HGF (GPP 8-day 500 m, gap-filled): Running & Zhao (2019) MOD17 User's Guide.
  GPP = DN x 1e-4 kg C m-2 per 8 days; DN 32761-32767 = fill classes; valid 0..30000.
  ``Psn_QC_500m`` bit 0 MODLAND QC: 0 = good.
* MOD15A2H (LAI/FPAR 8-day 500 m): Myneni et al. (2015) MOD15 User's Guide. LAI = DN x 0.1,
  FPAR = DN x 0.01; DN 249-255 = fill classes; valid 0..100. ``FparLai_QC`` bit 0: 0 = good.
* MOD16A3GF (annual ET 500 m): Running et al. (2019) MOD16 User's Guide. ET = DN x 0.1 kg m-2
  yr-1; DN 32761-32767 = fill classes; ``ET_QC_500m`` bit 0: 0 = good.
* MCD12Q1 (land cover, annual 500 m): Sulla-Menashe & Friedl (2018). ``LC_Type1`` IGBP 1-17,
  255 = fill (categorical: never averaged).
* Copernicus DEM GLO-90 (``cop-dem-glo-90``): float32 metres.
* ERA5 (``era5-pds`` on Planetary Computer, hourly/monthly NetCDF/Zarr assets): 2 m air
  temperature in K (offset -273.15 -> °C); precipitation in m (scale 1000 -> mm).
* SoilGrids 2.0 organic carbon stock 0-30 cm (``ocs``), ISRIC COGs: t/ha, nodata -32768. Not on
  Planetary Computer; serve the COGs through a local STAC catalog (``source`` key below).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["QCRule", "Product", "PRODUCTS", "product", "PLANETARY_COMPUTER"]

#: STAC API of Microsoft Planetary Computer (asset hrefs need signing with its token service).
PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"


@dataclass(frozen=True)
class QCRule:
    """A quality-band bit rule: a pixel is good when ``(qc & mask) == good``.

    Attributes
    ----------
    asset
        The QC asset/band name.
    mask
        Bits to test (e.g. ``0b11`` for bits 0-1).
    good
        Required value of those bits (e.g. ``0`` for "good quality").
    doc
        What the rule means, from the product's user guide.
    """

    asset: str = field(metadata={"doc": "QC asset or band name."})
    mask: int = field(metadata={"doc": "Bits tested (bitwise AND)."})
    good: int = field(default=0, metadata={"doc": "Value of the tested bits for a good pixel."})
    doc: str = field(default="", metadata={"doc": "Meaning of the rule."})


@dataclass(frozen=True)
class Product:
    """One predictor variable's source and decoding.

    Attributes
    ----------
    name
        Variable name in globalflux cubes (e.g. ``lst_day``).
    collection
        STAC collection id (Planetary Computer unless ``source`` says otherwise).
    asset
        Asset key holding the variable.
    scale, offset
        ``value = DN * scale + offset``.
    fill
        Raw DNs that mean "no data" (fill classes), masked to NaN.
    valid_range
        Raw DN range of valid data (inclusive); outside -> NaN. None: no check.
    units
        CF units of the decoded value.
    qc
        Optional :class:`QCRule`; pixels failing it are NaN before any statistic.
    categorical
        Class values (never scaled or averaged; resampled by mode).
    temporal
        ``"8day"``, ``"daily"``, ``"monthly"``, ``"annual"`` or ``"static"``.
    resolution
        Native pixel size (text, for documentation).
    source
        Where the collection is served.
    long_name
        CF long_name.
    """

    name: str
    collection: str
    asset: str
    scale: float = 1.0
    offset: float = 0.0
    fill: tuple[float, ...] = ()
    valid_range: tuple[float, float] | None = None
    units: str = "1"
    qc: QCRule | None = None
    categorical: bool = False
    temporal: str = "8day"
    resolution: str = ""
    source: str = PLANETARY_COMPUTER
    long_name: str = ""


_LST_QC = QCRule("QC_Day", 0b11, 0, "MOD11A2 QC bits 0-1 mandatory QA: 00 = LST produced, good quality")
_LSTN_QC = QCRule("QC_Night", 0b11, 0, "MOD11A2 QC bits 0-1 mandatory QA: 00 = LST produced, good quality")
_SR_QC = QCRule("sur_refl_state_500m", 0b111, 0,
                "MOD09A1 state bits 0-1 cloud state 00 = clear, bit 2 cloud shadow 0 = none")
_FILL_MOD17 = (32761.0, 32762.0, 32763.0, 32764.0, 32765.0, 32766.0, 32767.0)
_FILL_MOD15 = (249.0, 250.0, 251.0, 252.0, 253.0, 254.0, 255.0)


def _sr(band: int, what: str) -> Product:
    return Product(f"sr_b{band:02d}", "modis-09A1-061", f"sur_refl_b{band:02d}", scale=1e-4,
                   fill=(-28672.0,), valid_range=(-100.0, 16000.0), units="1", qc=_SR_QC,
                   resolution="463.3 m sinusoidal", long_name=f"MOD09A1 surface reflectance band {band} ({what})")


PRODUCTS: dict[str, Product] = {
    p.name: p
    for p in (
        Product("lst_day", "modis-11A2-061", "LST_Day_1km", scale=0.02, offset=-273.15, fill=(0.0,),
                valid_range=(7500.0, 65535.0), units="degC", qc=_LST_QC, resolution="926.6 m sinusoidal",
                long_name="MOD11A2 8-day daytime land surface temperature"),
        Product("lst_night", "modis-11A2-061", "LST_Night_1km", scale=0.02, offset=-273.15, fill=(0.0,),
                valid_range=(7500.0, 65535.0), units="degC", qc=_LSTN_QC, resolution="926.6 m sinusoidal",
                long_name="MOD11A2 8-day night-time land surface temperature"),
        _sr(1, "red 620-670 nm"),
        _sr(2, "NIR 841-876 nm"),
        _sr(3, "blue 459-479 nm"),
        _sr(6, "SWIR 1628-1652 nm"),
        Product("gpp", "modis-17A2HGF-061", "Gpp_500m", scale=1e-4, fill=_FILL_MOD17, valid_range=(0.0, 30000.0),
                units="kg m-2 (8 day)-1", qc=QCRule("Psn_QC_500m", 0b1, 0, "MOD17 bit 0 MODLAND QC: 0 = good"),
                resolution="463.3 m sinusoidal", long_name="MOD17A2HGF gross primary productivity (C per 8 days)"),
        Product("lai", "modis-15A2H-061", "Lai_500m", scale=0.1, fill=_FILL_MOD15, valid_range=(0.0, 100.0),
                units="m2 m-2", qc=QCRule("FparLai_QC", 0b1, 0, "MOD15 bit 0 MODLAND QC: 0 = good (main algorithm)"),
                resolution="463.3 m sinusoidal", long_name="MOD15A2H leaf area index"),
        Product("fpar", "modis-15A2H-061", "Fpar_500m", scale=0.01, fill=_FILL_MOD15, valid_range=(0.0, 100.0),
                units="1", qc=QCRule("FparLai_QC", 0b1, 0, "MOD15 bit 0 MODLAND QC: 0 = good (main algorithm)"),
                resolution="463.3 m sinusoidal", long_name="MOD15A2H fraction of absorbed PAR"),
        Product("et_annual", "modis-16A3GF-061", "ET_500m", scale=0.1, fill=_FILL_MOD17,
                valid_range=(-32767.0, 32700.0), units="kg m-2 yr-1",
                qc=QCRule("ET_QC_500m", 0b1, 0, "MOD16 bit 0 MODLAND QC: 0 = good"), temporal="annual",
                resolution="463.3 m sinusoidal", long_name="MOD16A3GF annual evapotranspiration"),
        Product("ndvi_13a1", "modis-13A1-061", "500m_16_days_NDVI", scale=1e-4, fill=(-3000.0,),
                valid_range=(-2000.0, 10000.0), units="1", temporal="16day", resolution="463.3 m sinusoidal",
                long_name="MOD13A1 16-day NDVI"),
        Product("land_cover_500m", "modis-12Q1-061", "LC_Type1", fill=(255.0,), categorical=True,
                temporal="annual", resolution="463.3 m sinusoidal", long_name="MCD12Q1 IGBP land cover (type 1)"),
        Product("dem", "cop-dem-glo-90", "data", fill=(-32767.0,), units="m", temporal="static",
                resolution="3 arc-second", long_name="Copernicus DEM GLO-90 elevation"),
        Product("t2m", "era5-pds", "air_temperature_at_2_metres", offset=-273.15, units="degC",
                temporal="daily", resolution="0.25 deg", long_name="ERA5 2 m air temperature"),
        Product("precip", "era5-pds", "precipitation_amount_1hour_accumulation", scale=1000.0, units="mm",
                temporal="daily", resolution="0.25 deg", long_name="ERA5 precipitation (1-hour accumulation)"),
        Product("soc_0_30", "soilgrids-ocs", "ocs_0-30cm_mean", fill=(-32768.0,), units="t ha-1",
                temporal="static", resolution="250 m Homolosine",
                source="ISRIC SoilGrids 2.0 COGs (files.isric.org/soilgrids/latest/data/ocs) via a local STAC catalog",
                long_name="SoilGrids 2.0 soil organic carbon stock 0-30 cm"),
    )
}


def product(name: str) -> Product:
    """The product called ``name``; an unknown name raises RecipeError listing the known ones."""
    from ..errors import RecipeError

    try:
        return PRODUCTS[name]
    except KeyError:
        raise RecipeError(f"unknown product {name!r}", where="cube.stac.products",
                          fix=f"Use one of: {', '.join(sorted(PRODUCTS))}.") from None
