"""penchant: a personalization engine with a Rust core.

Hand penchant a user and candidate items; it re-ranks and filters them for that user::

    import penchant
    ranked = penchant.rank_items({"genre:sci-fi": 1.0}, items, k=10, explain=True)
"""

from __future__ import annotations

from penchant._core import num_threads, set_num_threads
from penchant.covisitation import DEFAULT_COVISITATION_WEIGHTS, CoVisitation
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
from penchant.personalized_retrieval import rank_items
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
    "DEFAULT_WEIGHTS",
    "FACTORS",
    "MMR",
    "SCHEMA_VERSION",
    "Candidates",
    "Catalog",
    "CoVisitation",
    "CompiledProfile",
    "ConflictError",
    "Diversity",
    "ExplicitFeedback",
    "ExplicitRule",
    "FeatureCap",
    "Feedback",
    "FeedbackCollector",
    "FeedbackProcessor",
    "FeedbackRule",
    "FeedbackType",
    "Filters",
    "ImplicitFeedback",
    "Interaction",
    "Interest",
    "InterestModel",
    "ItemBatch",
    "PenchantError",
    "Preference",
    "PreferenceCategory",
    "PreferenceExtractor",
    "PreferenceSource",
    "ProfileManager",
    "RankedItem",
    "StoreUnavailableError",
    "UserProfile",
    "ValidationError",
    "__version__",
    "num_threads",
    "rank_items",
    "set_num_threads",
]
