"""penchant: a personalization engine with a Rust core.

Hand penchant a user and candidate items; it re-ranks and filters them for that user::

    import penchant
    with penchant.Engine() as engine:
        engine.record("u1", {"id": "b1", "features": ["genre:sci-fi"]}, "click")
        ranked = engine.rank("u1", items, k=10, explain=True)
"""

from __future__ import annotations

from penchant._core import num_threads, set_num_threads
from penchant.covisitation import DEFAULT_COVISITATION_WEIGHTS, CoVisitation
from penchant.engine import Engine, EngineConfig, FeedbackConfig
from penchant.errors import ConflictError, PenchantError, StoreUnavailableError, ValidationError
from penchant.feedback_collector import (
    DEFAULT_FEEDBACK_RULES,
    ExplicitFeedback,
    Feedback,
    FeedbackCollector,
    FeedbackProcessor,
    FeedbackRule,
    FeedbackType,
    ImplicitFeedback,
)
from penchant.items import Catalog, CompiledProfile, ItemBatch
from penchant.personalized_retrieval import (
    DEFAULT_RETRIEVAL_WEIGHTS,
    RETRIEVAL_FACTORS,
    ContentFilter,
    Exclusion,
    Explanation,
    PersonalizedRetriever,
    RankingConfig,
    RankingEngine,
    RetrievalRequest,
    rank_items,
)
from penchant.profile_store import (
    InMemoryProfileStore,
    PostgresProfileStore,
    ProfileSerializer,
    ProfileStore,
    RedisProfileStore,
    SQLiteProfileStore,
    TieredProfileStore,
    default_database_url,
    open_store,
)
from penchant.query_expansion import ExpandedQuery, ExpansionTerm, QueryExpander, QueryExpansionConfig
from penchant.scoring import DEFAULT_WEIGHTS, FACTORS, MMR, Candidates, Diversity, FeatureCap, Filters, RankedItem
from penchant.user_profile import (
    SCHEMA_VERSION,
    ExplicitRule,
    Interaction,
    Interest,
    InterestModel,
    Preference,
    PreferenceCategory,
    PreferenceExtractor,
    PreferenceSource,
    ProfileManager,
    UserProfile,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_COVISITATION_WEIGHTS",
    "DEFAULT_FEEDBACK_RULES",
    "DEFAULT_RETRIEVAL_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "MMR",
    "RETRIEVAL_FACTORS",
    "SCHEMA_VERSION",
    "Candidates",
    "Catalog",
    "CoVisitation",
    "CompiledProfile",
    "ConflictError",
    "ContentFilter",
    "Diversity",
    "Engine",
    "EngineConfig",
    "Exclusion",
    "ExpandedQuery",
    "ExpansionTerm",
    "Explanation",
    "ExplicitFeedback",
    "ExplicitRule",
    "FeatureCap",
    "Feedback",
    "FeedbackCollector",
    "FeedbackConfig",
    "FeedbackProcessor",
    "FeedbackRule",
    "FeedbackType",
    "Filters",
    "ImplicitFeedback",
    "InMemoryProfileStore",
    "Interaction",
    "Interest",
    "InterestModel",
    "ItemBatch",
    "PenchantError",
    "PersonalizedRetriever",
    "PostgresProfileStore",
    "Preference",
    "PreferenceCategory",
    "PreferenceExtractor",
    "PreferenceSource",
    "ProfileManager",
    "ProfileSerializer",
    "ProfileStore",
    "QueryExpander",
    "QueryExpansionConfig",
    "RankedItem",
    "RankingConfig",
    "RankingEngine",
    "RedisProfileStore",
    "RetrievalRequest",
    "SQLiteProfileStore",
    "StoreUnavailableError",
    "TieredProfileStore",
    "UserProfile",
    "ValidationError",
    "__version__",
    "default_database_url",
    "num_threads",
    "open_store",
    "rank_items",
    "set_num_threads",
]
